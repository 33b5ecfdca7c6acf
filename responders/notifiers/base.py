"""The notifier interface: how the outbox tells a named owner about an incident, whatever the channel."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from responders.incidents import IncidentView
from warden.contract.findings import OwnerRef


class NoticeKind(StrEnum):
    root = "root"  # the one message per incident and notifier, to the responder
    repeat = "repeat"  # the incident was seen again: refresh the root, reply in its thread
    update = "update"  # a lifecycle change or decision: refresh the root, reply in its thread
    escalation = "escalation"  # the next step of the chain: tell that owner, reply in the root's thread


@dataclass(frozen=True)
class Posted:
    """Where a notifier put a message: its address (a Slack channel, "console") and the notifier's own reference
    to it (Slack's ts), which follow-ups use to thread under the root."""

    address: str
    ref: str


@dataclass(frozen=True)
class Notice:
    """One recorded notification, ready to send. `note` is plain, unescaped text; notifiers make it safe.
    `root` is this notifier's root message of the incident, once it is out."""

    kind: NoticeKind
    incident: IncidentView
    target: OwnerRef
    note: str | None = None
    root: Posted | None = None


class Undeliverable(Exception):
    """Retrying cannot help (no contact for this notifier, unknown channel, revoked token): dead-letter at once."""


class Notifier(Protocol):
    """One channel to humans. Adding a channel means one module with this shape plus a registry entry; dedup,
    retries, recording and dead-letters are the outbox's stages."""

    name: str

    async def send(self, notice: Notice) -> Posted:
        """Deliver the notice; return the message that carries it (the root message for `root`)."""
        ...


@runtime_checkable
class FindsRoot(Protocol):
    """A notifier that can look up a root message it may have posted before an interrupted attempt ended (Slack
    keeps history); the outbox's dedup stage asks it before posting a root again."""

    async def find_root(self, incident: IncidentView, target: OwnerRef) -> Posted | None:
        """The incident's root message if an earlier, interrupted attempt did post it; None otherwise."""
        ...
