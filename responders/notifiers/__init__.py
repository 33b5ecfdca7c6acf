"""Notifier registry: one module per channel to humans, one entry here; settings pick the one a worker uses."""

from __future__ import annotations

from collections.abc import Callable

from responders.config import ResponderConfig
from responders.notifiers import console
from responders.notifiers.base import Notifier
from responders.notifiers.slack import notifier as slack

NOTIFIERS: dict[str, Callable[[ResponderConfig], Notifier]] = {
    "console": console.from_config,
    "slack": slack.from_config,
}


def notifier_for(settings: ResponderConfig) -> Notifier:
    """Slack when WARDEN_SLACK_TOKEN is set, else the console (the embedded default)."""
    return NOTIFIERS["slack" if settings.slack_token else "console"](settings)
