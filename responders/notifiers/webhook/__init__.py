"""A generic webhook notifier (send-only): its settings, its JSON body and its registration, all in this package."""

from __future__ import annotations

from typing import TYPE_CHECKING

from responders.notifiers.plugin import NotifierPlugin
from responders.notifiers.webhook.settings import WebhookSettings

if TYPE_CHECKING:
    from responders.config import ResponderConfig
    from responders.notifiers.base import Notifier


def _build(settings: WebhookSettings, core: ResponderConfig) -> Notifier:
    from responders.notifiers.webhook.notifier import from_settings

    return from_settings(settings)


PLUGIN = NotifierPlugin(name="webhook", settings=WebhookSettings, build=_build,
                        needs=("webhook_url", "webhook_secret_file"))
