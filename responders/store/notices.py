"""What the outbox records and hands to the notifiers: a notice's kind, where it was posted, a claimed row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from responders.digests import DigestView
from responders.group_digest import GroupView
from responders.incidents import IncidentView
from warden.contract.findings import OwnerRef


class NoticeKind(StrEnum):
    root = "root"  # the one message per incident and notifier, to the responder
    repeat = "repeat"  # the incident was seen again: refresh the root, reply in its thread
    update = "update"  # a lifecycle change or decision: refresh the root, reply in its thread
    escalation = "escalation"  # the next step of the chain: tell that owner, reply in the root's thread
    digest = "digest"  # the periodic review digest to a responder: about many review incidents, no root, no thread
    group = "group"  # a group's digest: posted once per repeat interval, then updated; its members in its thread
    approval = "approval"  # an approval request, to the owner at one level of its chain (the approver first)
    approval_closed = "approval_closed"  # the request was decided or expired: its messages say so, buttons gone


@dataclass(frozen=True)
class Posted:
    """Where a notifier put a message: its address (a Slack channel, "console") and the notifier's own reference
    to it (Slack's ts), which follow-ups use to thread under the root."""

    address: str
    ref: str


class Pending(StrEnum):
    pending = "pending"
    delivered = "delivered"
    dead = "dead"


@dataclass(frozen=True)
class Claimed:
    """A notification this worker now holds the lease on, with what it needs to be sent: `root` is where its
    notifier put the incident's root message. A follow-up is claimed without one only when that root is dead.

    `claim` is this claim's token: every later write to the row is conditional on it (fencing), so once another
    worker has claimed the row after this lease ran out, nothing this worker does with it is recorded."""

    id: int
    claim: str
    notifier: str
    kind: NoticeKind
    attempts: int
    target: OwnerRef
    note: str | None
    incident: IncidentView
    root: Posted | None

    @property
    def subject(self) -> str:
        return f"incident #{self.incident.id}"


@dataclass(frozen=True)
class ClaimedDigest:
    """A review digest's notification this worker holds the lease on (fenced by `claim`, like `Claimed`)."""

    id: int
    claim: str
    notifier: str
    attempts: int
    target: OwnerRef
    digest: DigestView
    kind: NoticeKind = NoticeKind.digest

    @property
    def subject(self) -> str:
        return f"review digest #{self.digest.id}"


@dataclass(frozen=True)
class ClaimedGroup:
    """A refresh of a group's digest this worker holds the lease on (fenced by `claim`, like `Claimed`): `root` is
    the digest message to update, None when this refresh posts one."""

    id: int
    claim: str
    notifier: str
    attempts: int
    target: OwnerRef
    group: GroupView
    root: Posted | None
    kind: NoticeKind = NoticeKind.group

    @property
    def subject(self) -> str:
        return f"digest of group #{self.group.id}"


@dataclass(frozen=True)
class ApprovalView:
    """An approval request as a notifier shows it (every string from the agent already redacted when recorded)."""

    id: str
    agent_id: str
    workflow: str | None
    action: dict[str, Any]
    reason: str
    status: str
    decided_by: str | None
    requested_at: datetime


@dataclass(frozen=True)
class ClaimedApproval:
    """An approval request's notification this worker holds the lease on (fenced by `claim`, like `Claimed`).
    `approval`: ask `target` (with the buttons when `buttons`: that level decides; `note` prefaces an escalation);
    `approval_closed`: replace each of `messages` (where the asks went, and whom they asked) by the outcome."""

    id: int
    claim: str
    notifier: str
    kind: NoticeKind
    attempts: int
    target: OwnerRef
    note: str | None
    approval: ApprovalView
    buttons: bool = True
    messages: tuple[tuple[Posted, OwnerRef], ...] = field(default=())

    @property
    def subject(self) -> str:
        return f"approval request {self.approval.id}"


AnyClaimed = Claimed | ClaimedDigest | ClaimedGroup | ClaimedApproval
# Which due notification is claimed first when the channel budget cannot take them all: pages (roots, and
# escalations, which page the next owner) before thread replies and updates, then groups' digests, then review
# digests; oldest first within each.
PRIORITY = {NoticeKind.root: 0, NoticeKind.escalation: 0, NoticeKind.update: 1, NoticeKind.repeat: 1,
            NoticeKind.group: 2, NoticeKind.digest: 3, NoticeKind.approval: 0, NoticeKind.approval_closed: 1}
