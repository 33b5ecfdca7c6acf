"""Notifier registry: one module per channel to humans, one entry here; settings pick the one a worker uses."""

from __future__ import annotations

from collections.abc import Callable

from responders.notifiers import console, slack
from responders.notifiers.base import Notifier
from warden.settings import Settings

NOTIFIERS: dict[str, Callable[[Settings], Notifier]] = {
    "console": console.from_settings,
    "slack": slack.from_settings,
}


def notifier_for(settings: Settings) -> Notifier:
    """Slack when WARDEN_SLACK_TOKEN is set, else the console (the embedded default)."""
    return NOTIFIERS["slack" if settings.slack_token else "console"](settings)
