"""The ids a matrix may name, gathered from the layers that own them, and the loader that checks against them."""

from __future__ import annotations

from pathlib import Path

from playbooks.catalog import PLAYBOOKS
from responders.notifiers.slack import render as slack_render
from streams.detectors import REGISTRY
from warden.policy import Catalogue, Policy, load_policy

CATALOGUE = Catalogue(
    rules=frozenset(REGISTRY),
    playbooks=frozenset(PLAYBOOKS),
    actors={slack_render.NOTIFIER: slack_render.is_user_id},
)


def load(path: str | Path) -> Policy:
    """Load a policy checked against every built-in rule, shipped playbook and notifier this build has."""
    return load_policy(path, CATALOGUE)
