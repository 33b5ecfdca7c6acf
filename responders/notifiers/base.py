"""The notifier interface: how the outbox tells a named owner about an incident, whatever the channel."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from responders.incidents import IncidentView
from warden.contract.findings import OwnerRef


class NoticeKind(StrEnum):
    root = "root"  # the one message per incident, to the responder
    repeat = "repeat"  # the incident was seen again: refresh the root, reply in its thread
    update = "update"  # a lifecycle change or decision: refresh the root, reply in its thread
    escalation = "escalation"  # the next step of the chain: tell that owner, reply in the root's thread


@dataclass(frozen=True)
class Posted:
    """Where a message landed: the channel and Slack ts (the console makes up its own)."""

    channel: str
    ts: str


@dataclass(frozen=True)
class Notice:
    """One recorded notification, ready to send. `note` is plain, unescaped text; notifiers make it safe."""

    kind: NoticeKind
    incident: IncidentView
    target: OwnerRef
    note: str | None = None
    root: Posted | None = None


class Undeliverable(Exception):
    """Retrying cannot help (no Slack id, unknown channel, revoked token): dead-letter at once."""


class Notifier(Protocol):
    """One channel to humans. Adding a channel means one module with this shape plus a registry entry."""

    name: str

    async def send(self, notice: Notice) -> Posted:
        """Deliver the notice; return the message that carries it (the root message for `root`)."""
        ...

    async def find_root(self, incident: IncidentView, target: OwnerRef) -> Posted | None:
        """The incident's root message if an earlier, interrupted attempt did post it; None otherwise."""
        ...

    async def tell(self, channel: str, slack_user: str, text: str) -> None:
        """Say something only `slack_user` sees (a refusal, a stale click)."""
        ...
