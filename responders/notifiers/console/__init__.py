"""The console notifier's package: no settings, one log line per notice (the embedded default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from responders.notifiers.plugin import NotifierPlugin

if TYPE_CHECKING:
    from responders.config import ResponderConfig
    from responders.notifiers.base import Notifier


class ConsoleSettings(BaseModel):
    """The console has nothing to set."""


def _build(settings: ConsoleSettings, core: ResponderConfig) -> Notifier:
    from responders.notifiers.console.notifier import ConsoleNotifier

    return ConsoleNotifier()


PLUGIN = NotifierPlugin(name="console", settings=ConsoleSettings, build=_build)
