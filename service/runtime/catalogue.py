"""The ids a matrix may name, gathered from the layers that own them, and the loader that checks against them."""

from __future__ import annotations

from pathlib import Path

from playbooks.actions import ACTIONS, checker
from playbooks.library import shipped
from responders.notifiers.slack import render as slack_render
from streams.detectors import RULE_IDS
from warden.policy import Catalogue, Policy, load_policy

CATALOGUE = Catalogue(
    rules=RULE_IDS,
    playbooks=shipped(),
    actions={name: checker(action) for name, action in ACTIONS.items()},
    actors={slack_render.NOTIFIER: slack_render.is_user_id},
)


def load(path: str | Path) -> Policy:
    """Load a policy checked against every built-in rule, shipped playbook, action and notifier this build has."""
    return load_policy(path, CATALOGUE)
