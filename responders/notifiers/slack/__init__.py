"""The Slack notifier with its settings, rendering and interactivity: all that is Slack-specific lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from responders.notifiers.plugin import NotifierPlugin
from responders.notifiers.slack.settings import SlackSettings

if TYPE_CHECKING:
    from responders.config import ResponderConfig
    from responders.notifiers.base import Notifier


def _build(settings: SlackSettings, core: ResponderConfig) -> Notifier:
    from responders.notifiers.slack.notifier import from_settings  # slack-sdk: only workers load it

    return from_settings(settings)


def _is_user(identity: str) -> bool:
    from responders.notifiers.slack.render import is_user_id

    return is_user_id(identity)


PLUGIN = NotifierPlugin(name="slack", settings=SlackSettings, build=_build, needs=("slack_token",), by_default=True,
                        actor=_is_user)
