"""The ids a matrix may name, gathered from the layers that own them, and the loader that checks against them."""

from __future__ import annotations

from pathlib import Path

from playbooks.actions import ACTIONS, checker
from playbooks.library import shipped
from responders.notifiers.registry import NOTIFIERS
from streams.detectors import RULE_IDS
from warden.policy import Catalogue, Policy, load_policy

CATALOGUE = Catalogue(
    rules=RULE_IDS,
    playbooks=shipped(),
    actions={name: checker(action) for name, action in ACTIONS.items()},
    actors={name: p.actor for name, p in NOTIFIERS.items() if p.actor is not None},
)


def load(path: str | Path) -> Policy:
    """Load a policy checked against every built-in rule, shipped playbook, action and notifier this build has."""
    return load_policy(path, CATALOGUE)
