"""The notifier registry: each notifier is a package under responders/notifiers/ and one line in NOTIFIERS."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from responders.notifiers.plugin import NotifierPlugin

if TYPE_CHECKING:  # the runtime's settings import this registry: it stays light (no renderers, no clients)
    from responders.config import ResponderConfig
    from responders.notifiers.base import Notifier

# The packages under responders/notifiers/, one a line; each names its NotifierPlugin PLUGIN after itself.
PACKAGES = (
    "console",
    "slack",
    "webhook",
)
NOTIFIERS: dict[str, NotifierPlugin[Any]] = {
    name: import_module(f"responders.notifiers.{name}").PLUGIN for name in PACKAGES}
SETTING = "WARDEN_NOTIFIERS"
FALLBACK = "console"  # what incidents go to when WARDEN_NOTIFIERS is unset and no default notifier is set up


def settings_models() -> tuple[type[BaseModel], ...]:
    """Every notifier's settings fragment, for service.runtime.settings to compose into its Settings."""
    return tuple(p.settings for p in NOTIFIERS.values())


def _missing(plugin: NotifierPlugin[Any], values: Mapping[str, object]) -> list[str]:
    return [f"WARDEN_{f.upper()}" for f in plugin.needs if values.get(f) is None]


def notifier_names(configured: str | None, values: Mapping[str, object]) -> list[str]:
    """The notifiers a worker delivers to, in order: those WARDEN_NOTIFIERS lists (comma-separated), or when it is
    unset, the default notifiers whose settings are set (Slack with WARDEN_SLACK_TOKEN), else the console. A name
    that cannot work is a ValueError that names the variable, so a worker never starts with a notifier it cannot
    use. `values`: the settings by field name."""
    names = list(dict.fromkeys(n.strip() for n in (configured or "").split(",") if n.strip()))
    if not names:
        chosen = [p.name for p in NOTIFIERS.values() if p.by_default and not _missing(p, values)]
        return chosen or [FALLBACK]
    unknown = [n for n in names if n not in NOTIFIERS]
    if unknown:
        raise ValueError(f"unknown notifier {', '.join(map(repr, unknown))} in {SETTING} "
                         f"(known: {', '.join(sorted(NOTIFIERS))})")
    for name in names:
        missing = _missing(NOTIFIERS[name], values)
        if missing:
            raise ValueError(f"{SETTING} names {name}, which needs {' and '.join(missing)}")
    return names


def notifiers_for(settings: ResponderConfig) -> list[Notifier]:
    """One instance of each notifier the settings choose (see `notifier_names`)."""
    values = {f: getattr(settings, f, None) for p in NOTIFIERS.values() for f in p.needs}
    return [NOTIFIERS[name].build(NOTIFIERS[name].fragment(settings), settings)
            for name in notifier_names(settings.notifiers, values)]
