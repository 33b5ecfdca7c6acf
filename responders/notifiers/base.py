"""The notifier interface: how the outbox tells a named owner about an incident, whatever the channel."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from responders.digests import DigestView
from responders.group_digest import GroupView
from responders.incidents import IncidentView
from responders.store.notices import ApprovalView, NoticeKind, Posted
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef

if TYPE_CHECKING:
    from aiohttp import web

    from responders.silences import Silences
    from responders.store.rooms import Store


@dataclass(frozen=True)
class Notice:
    """One recorded notification, ready to send. `note` is plain, unescaped text; notifiers make it safe.
    `root` is this notifier's root message of the incident, once it is out. `retried`: an earlier attempt of this
    notification may have reached the notifier (a send of several requests may have made some of them). `key`
    names this notification (its outbox row): a thread reply carries it, so a retried one can be found, not repeated."""

    kind: NoticeKind
    incident: IncidentView
    target: OwnerRef
    note: str | None = None
    root: Posted | None = None
    retried: bool = False
    key: str | None = None


@dataclass(frozen=True)
class DigestNotice:
    """A review digest, ready to send to its responder: one message of its own, never threaded."""

    digest: DigestView
    target: OwnerRef
    kind: NoticeKind = NoticeKind.digest


@dataclass(frozen=True)
class GroupNotice:
    """A refresh of a group's digest: post its message (`root` None: the group's first, or announced again after the
    repeat interval) or update it (`root`), then name the new members in its thread. `retried`: an earlier attempt
    may have posted the message (look for it before posting again)."""

    group: GroupView
    target: OwnerRef
    root: Posted | None = None
    retried: bool = False
    kind: NoticeKind = NoticeKind.group


AnyNotice = Notice | DigestNotice | GroupNotice


@dataclass(frozen=True)
class ApprovalNotice:
    """An approval request's notification (see `AsksApproval`). `approval`: ask `target` for a decision (with the
    buttons when `buttons`; `note` prefaces an escalation). `approval_closed`: each of `messages` (where an ask went,
    whom it asked) now shows the outcome, its buttons gone. `retried` and `key` as in `Notice`: a retried ask first
    looks for the message an interrupted attempt may have posted, by `key`."""

    kind: NoticeKind
    approval: ApprovalView
    target: OwnerRef
    note: str | None = None
    buttons: bool = True
    messages: tuple[tuple[Posted, OwnerRef], ...] = ()
    retried: bool = False
    key: str | None = None


Outgoing = AnyNotice | ApprovalNotice  # everything the outbox hands a notifier


class Undeliverable(Exception):
    """Retrying cannot help (no contact for this notifier, unknown channel, revoked token): dead-letter at once."""


class TryLater(Exception):
    """The channel asked to be left alone for `after_s` seconds (a rate limit longer than a notifier waits in one
    send): the outbox tries again no sooner than that."""

    def __init__(self, message: str, after_s: float, channel: str | None = None) -> None:
        super().__init__(message)
        self.after_s = after_s
        self.channel = channel  # the channel that asked (a per-channel rate limit), when known


class LeaseEnded(Exception):
    """The outbox's lease on this notification ends before a request could finish, so the request was not made:
    another worker may claim the notification by then. The outbox gives the notification back."""


# The monotonic time (time.monotonic()) by which every request of the current send must have finished: the
# outbox's lease on the notification ends soon after. None outside a leased send (e.g. the interactivity's replies).
_DEADLINE: ContextVar[float | None] = ContextVar("warden_send_deadline", default=None)


@contextmanager
def send_deadline(at: float) -> Iterator[None]:
    """Run a notifier call under a deadline (the outbox does, around each leased call)."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def time_left() -> float:
    """Seconds until the current send's deadline; infinite outside a leased send."""
    deadline = _DEADLINE.get()
    return float("inf") if deadline is None else deadline - time.monotonic()


def ensure_time(needed_s: float, what: str) -> None:
    """Raise LeaseEnded unless something taking up to `needed_s` seconds can finish before the deadline. A notifier
    calls this immediately before each request that has an effect, and before each retry of one."""
    left = time_left()
    if left < needed_s:
        raise LeaseEnded(f"{what} needs up to {needed_s:.1f}s but the lease leaves {max(left, 0.0):.1f}s")


class Notifier(Protocol):
    """One channel to humans. Adding a channel means one package with this shape plus one registry line
    (docs/architecture.md); dedup, retries, recording and dead-letters are the outbox's stages.

    `send_bound_s` is the longest one `send` can take, all its requests, retries and waits included: the outbox
    leases a notification for that long right before each send, and another worker may claim it after. A notifier
    that talks to a remote service also calls `ensure_time` before each request, so that no request leaves once
    the lease could have ended before it completes."""

    name: str
    send_bound_s: float

    async def send(self, notice: AnyNotice) -> Posted:
        """Deliver the notice; return the message that carries it (the root message for `root`, the digest message
        for `group`)."""
        ...


# Told when a channel answered 429 with Retry-After: (channel, seconds).
RateLimited = Callable[[str, float], Awaitable[None]]


@runtime_checkable
class Budgeted(Protocol):
    """A notifier whose channels limit how fast messages may be posted to each (Slack: about one per second per
    channel). `spend` says which channels a notice posts to, and how many messages each; the outbox claims a
    notification only when every one of them has that much of its shared budget left (`responders/budget.py`):
    `channel_rate` messages per second, at most `channel_burst` in any one second. The responder sets
    `on_rate_limit`, so a 429 holds the channel for every worker."""

    channel_rate: float
    channel_burst: int
    on_rate_limit: RateLimited | None

    def spend(self, notice: Outgoing) -> dict[str, int]:
        """Messages `notice` posts, per channel (address as the notifier names it)."""
        ...


@runtime_checkable
class AsksApproval(Protocol):
    """A notifier that asks owners for approval requests' decisions (its messages carry the buttons, its inbound
    route takes the clicks): the approval desk records its asks as outbox rows for these notifiers only."""

    async def send_approval(self, notice: ApprovalNotice) -> Posted:
        """Post the ask (returning where it went) or close the asked messages (returning the first of them)."""
        ...


@runtime_checkable
class FindsRoot(Protocol):
    """A notifier that can look up a root message it may have posted before an interrupted attempt ended (Slack
    keeps history); the outbox's dedup stage asks it before posting a root again."""

    async def find_root(self, incident: IncidentView, target: OwnerRef) -> Posted | None:
        """The incident's root message if an earlier, interrupted attempt did post it; None otherwise."""
        ...


DONE, FORBIDDEN, CONFLICT = "done", "forbidden", "conflict"  # what became of a decision on an approval request


class DecidesApprovals(Protocol):
    """The approval desk, as a notifier's approval buttons reach it."""

    async def decide_by(self, request_id: str, actor: Actor, *, approve: bool, person: bool
                        ) -> tuple[str, str] | None:
        """(DONE, FORBIDDEN or CONFLICT, what happened), or None for an unknown request."""
        ...


class Inbound(Protocol):
    """A notifier's route for what comes back from its messages (button clicks), served by the worker's web server.
    Changes go through the store, so the outbox tells everyone."""

    def install(self, app: web.Application) -> None: ...

    def take_approvals(self, desk: DecidesApprovals) -> None:
        """Decide the approval requests' button clicks through `desk` from now on (the approval host, once its
        desk is built)."""
        ...

    async def drain(self) -> None:
        """Wait for answers still being handled (tests, shutdown)."""
        ...


@runtime_checkable
class Interactive(Protocol):
    """A notifier whose messages carry buttons: it brings the route their clicks come back to."""

    def inbound(self, store: Store, silences: Silences, *, clock: Callable[[], datetime],
                on_change: Callable[[], None]) -> Inbound | str:
        """The route, with `on_change` called after each change a click made; or why there is none (a str naming
        the setting that is missing)."""
        ...
