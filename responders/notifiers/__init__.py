"""Notifier registry: one module per channel to humans, one entry here; WARDEN_NOTIFIERS picks those a worker uses."""

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
SETTING = "WARDEN_NOTIFIERS"


def notifier_names(configured: str | None, slack_token: bool) -> list[str]:
    """The notifiers a worker delivers to, in order: those WARDEN_NOTIFIERS lists (comma-separated), or when it is
    unset, Slack if WARDEN_SLACK_TOKEN is set and the console otherwise. A name that cannot work is a ValueError
    that names the variable, so a worker never starts with a notifier it cannot use."""
    names = list(dict.fromkeys(n.strip() for n in (configured or "").split(",") if n.strip()))
    if not names:
        return ["slack" if slack_token else "console"]
    unknown = [n for n in names if n not in NOTIFIERS]
    if unknown:
        raise ValueError(f"unknown notifier {', '.join(map(repr, unknown))} in {SETTING} "
                         f"(known: {', '.join(sorted(NOTIFIERS))})")
    if "slack" in names and not slack_token:
        raise ValueError(f"{SETTING} names slack, which needs WARDEN_SLACK_TOKEN")
    return names


def notifiers_for(settings: ResponderConfig) -> list[Notifier]:
    """One instance of each notifier the settings choose (see `notifier_names`)."""
    return [NOTIFIERS[name](settings) for name in notifier_names(settings.notifiers, settings.slack_token is not None)]
