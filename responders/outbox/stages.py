"""The delivery stages around a one-method notifier, after Alertmanager's notify pipeline: dedup (never a second
root message), retry with backoff, record the delivery, dead-letter. Notifiers only send; these decide the rest.

Every stage works under the claim the outbox took on the row (see `Store.claim_due`): each notifier call
is made only right after the claim's lease was renewed (`Lease.run`), and every write names the claim's token, so a
worker whose lease ran out while it was slow or paused, and whose row another worker claimed, sends nothing more and
records nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from responders.notifiers.base import (
    ApprovalNotice,
    AsksApproval,
    DigestNotice,
    FindsRoot,
    GroupNotice,
    LeaseEnded,
    Notice,
    Notifier,
    Outgoing,
    TryLater,
    Undeliverable,
    ensure_time,
    send_deadline,
)
from responders.notifiers.console.notifier import ConsoleNotifier
from responders.store.notices import AnyClaimed, ClaimedApproval, ClaimedDigest, ClaimedGroup, NoticeKind, Posted
from responders.store.rooms import Store
from warden.contract.redact import redact_text
from warden.kit.retry import Backoff
from warden.telemetry import metrics

log = logging.getLogger("warden.outbox")
REASON_MAX_CHARS = 300
# How long renewing a lease (one short UPDATE) may take before the notifier call it was for is called off.
RENEWAL_GRACE_S = 1.0
# How far apart the workers' clocks may be: a lease (written in this worker's wall time, read against another's)
# lasts this much longer than this worker's own monotonic deadline for the call.
CLOCK_SKEW_S = 1.0

T = TypeVar("T")


class ClaimLost(Exception):
    """Another worker claimed the notification after this worker's lease ran out: this worker must not send it."""


class Leased(Protocol):
    """Runs a notifier call under the claim on its notification."""

    async def run(self, bound_s: float, call: Callable[[], Awaitable[T]], what: str) -> T: ...


@dataclass
class Lease:
    """The claim on one notification while its notifier is called. `run` renews the lease (fenced by the claim's
    token) for one call, right before it: `RENEWAL_GRACE_S + bound_s + CLOCK_SKEW_S` from now, where `bound_s` is
    the longest the call can take. The call must finish by the local monotonic deadline, `RENEWAL_GRACE_S +
    bound_s` after the renewal began, so it is over before any other worker may claim the row: checked here
    immediately before the call, and by the notifier before each request it makes (`ensure_time`)."""

    store: Store
    claimed: AnyClaimed
    clock: Callable[[], datetime]

    async def run(self, bound_s: float, call: Callable[[], Awaitable[T]], what: str) -> T:
        began = time.monotonic()
        until = self.clock() + timedelta(seconds=RENEWAL_GRACE_S + bound_s + CLOCK_SKEW_S)
        if not await self.store.claims.renew(self.claimed, until):
            raise ClaimLost(f"another worker claimed it before the {what}")
        with send_deadline(began + RENEWAL_GRACE_S + bound_s):
            ensure_time(bound_s, f"the {what}")
            return await call()


def notice_of(c: AnyClaimed) -> Outgoing:
    if isinstance(c, ClaimedApproval):
        return ApprovalNotice(kind=c.kind, approval=c.approval, target=c.target, note=c.note, buttons=c.buttons,
                              messages=c.messages, retried=c.attempts > 1, key=str(c.id))
    if isinstance(c, ClaimedDigest):
        return DigestNotice(digest=c.digest, target=c.target)
    if isinstance(c, ClaimedGroup):
        return GroupNotice(group=c.group, target=c.target, root=c.root, retried=c.attempts > 1)
    return Notice(kind=c.kind, incident=c.incident, target=c.target, note=c.note, root=c.root,
                  retried=c.attempts > 1, key=str(c.id))


async def dedup(notifier: Notifier, c: AnyClaimed, notice: Outgoing,
                lease: Leased) -> Posted:
    """Send, unless the root is out already: its stored reference first, then (when an earlier claim of the row
    may have reached the notifier: attempts > 1) whatever the notifier finds, if it can look. The first claim of a
    root row needs no look: claims are fenced, so no other claim of the row has sent anything, and an incident has
    one root row per notifier. A follow-up whose root was dead-lettered has nothing to thread under and is
    undeliverable. A review digest is a message of its own: claims are fenced, so it is sent once per claim
    like any follow-up (it has no root to wait for, nor one to look up). An approval request's ask carries its
    row's key: the notifier looks for it when the row was claimed before (`AsksApproval`)."""
    if isinstance(c, ClaimedApproval) or isinstance(notice, ApprovalNotice):
        if not isinstance(notice, ApprovalNotice) or not isinstance(notifier, AsksApproval):
            raise Undeliverable(f"the {notifier.name} notifier does not ask for approvals")
        return await lease.run(notifier.send_bound_s, lambda: notifier.send_approval(notice), "send")
    assert not isinstance(notice, ApprovalNotice)
    if isinstance(c, ClaimedDigest | ClaimedGroup):  # a group's notifier looks for its own message when retried
        return await lease.run(notifier.send_bound_s, lambda: notifier.send(notice), "send")
    if c.kind is not NoticeKind.root:
        if c.root is None:
            raise Undeliverable(f"the incident's {notifier.name} root message was dead-lettered")
        return await lease.run(notifier.send_bound_s, lambda: notifier.send(notice), "send")
    if c.root is not None:  # the stored reference: the root went out and was recorded
        return c.root
    if c.attempts > 1 and isinstance(notifier, FindsRoot):
        found = await lease.run(notifier.send_bound_s, lambda: notifier.find_root(c.incident, c.target),
                                "look-up of an earlier root")
        if found is not None:
            log.warning("incident #%d: %s root message found by its key after an interrupted delivery",
                        c.incident.id, notifier.name)
            return found
    return await lease.run(notifier.send_bound_s, lambda: notifier.send(notice), "send")


@dataclass(frozen=True)
class Retry:
    """Durable retries: the next attempt's time goes into the database, `backoff.delay(attempt)` after now, until
    `max_attempts` attempts were made."""

    backoff: Backoff
    max_attempts: int

    def next_attempt(self, attempts: int, now: datetime) -> datetime | None:
        """When to try again after failed attempt number `attempts`; None once the attempts are used up."""
        if attempts >= self.max_attempts:
            return None
        return now + timedelta(seconds=self.backoff.delay(attempts))


async def record(store: Store, c: AnyClaimed, posted: Posted, *, notifier: str,
                 now: datetime) -> bool:
    """The delivery, on the notification row (and as the notifier's root message of the incident), plus metrics;
    False, with nothing recorded, when the claim was lost."""
    if not await store.claims.mark_delivered(c, posted, now):
        return False
    metrics.NOTIFICATIONS_DELIVERED.labels(notifier=notifier, kind=c.kind.value).inc()
    if isinstance(c, ClaimedDigest | ClaimedApproval):
        return True
    if isinstance(c, ClaimedGroup):
        metrics.DIGEST_MEMBERS_NAMED.labels(notifier=notifier).inc(len(c.group.lines))
        return True
    if c.kind is NoticeKind.root:  # time to notify: the incident's first event to its responder being told
        waited = (now - c.incident.first_seen).total_seconds()
        metrics.TIME_TO_NOTIFY.labels(notifier=notifier).observe(max(0.0, waited))
    if c.kind in (NoticeKind.root, NoticeKind.repeat):  # the responder was told about findings
        metrics.ALERTS.labels(channel=notifier, rule=c.incident.rule).inc()
    return True


async def dead_letter(store: Store, c: AnyClaimed, reason: str, *, notifier: str,
                      notice: Outgoing,
                      fallback: ConsoleNotifier, now: datetime) -> bool:
    """Give up on a notification without losing it: the row and the timeline say so, a metric counts it and the
    console gets an ERROR line with everything it carried. False, with nothing done, when the claim was lost."""
    if not await store.claims.dead_letter(c, reason, now):
        return False
    metrics.NOTIFICATIONS_DEAD.labels(notifier=notifier, kind=c.kind.value).inc()
    fallback.dead_letter_alert(notice, reason)
    return True


def lost(c: AnyClaimed, notifier: str, when: str, detail: str) -> None:
    """This worker's claim on `c` was taken over by another worker: say so and count it; nothing is recorded."""
    metrics.OUTBOX_CLAIMS_LOST.labels(notifier=notifier, when=when).inc()
    level = logging.ERROR if when == "after_send" else logging.WARNING
    log.log(level, "%s notification %d (%s, %s, attempt %d): claim lost %s; %s", notifier, c.id,
            c.kind.value, c.subject, c.attempts, when.replace("_", " "), detail)


class Pipeline:
    """One notifier's stages. `deliver` tries a claimed notification once and leaves it delivered, due again
    later, or dead, if this worker still holds its claim (else it leaves it alone); it raises only when the
    database does (the row then waits for its lease to end)."""

    def __init__(self, notifier: Notifier, store: Store, *, retry: Retry, clock: Callable[[], datetime],
                 fallback: ConsoleNotifier) -> None:
        self.notifier, self.store, self.retry, self.clock, self.fallback = notifier, store, retry, clock, fallback

    async def deliver(self, c: AnyClaimed) -> None:
        name = self.notifier.name
        notice = notice_of(c)
        try:
            posted = await dedup(self.notifier, c, notice, Lease(self.store, c, self.clock))
        except asyncio.CancelledError:
            raise
        except ClaimLost as exc:
            lost(c, name, "before_send", f"not sent: {exc}")
            return
        except LeaseEnded as exc:  # too slow (or paused) to make the next request within the lease
            reason = f"lease ended: {exc}"
            if await self.store.claims.give_back(c, reason):
                log.warning("%s notification %d (%s, %s) given back: %s", name, c.id, c.kind.value,
                            c.subject, reason)
            else:
                lost(c, name, "before_send", reason)
            return
        except Undeliverable as exc:
            await self._give_up(c, notice, str(exc), self.clock())
            return
        except Exception as exc:  # noqa: BLE001 - every failure is retried, then dead-lettered, never dropped
            await self._failed(c, notice, exc)
            return
        if not await record(self.store, c, posted, notifier=name, now=self.clock()):
            lost(c, name, "after_send", f"sent as {posted.address}/{posted.ref} but not recorded: the other "
                 "worker's delivery stands and this message may be a duplicate")

    async def _failed(self, c: AnyClaimed, notice: Outgoing, exc: Exception) -> None:
        name = self.notifier.name
        reason = redact_text(f"{type(exc).__name__}: {exc}", REASON_MAX_CHARS)
        now = self.clock()
        if isinstance(exc, TryLater) and exc.channel is not None:  # a channel's Retry-After: not a failed attempt
            await self.store.outbox.rate_limited(name, exc.channel, exc.after_s, now)
            metrics.CHANNEL_RATE_LIMITED.labels(notifier=name).inc()
            later = now + timedelta(seconds=exc.after_s)
            if await self.store.claims.defer(c, reason, later):
                log.warning("%s notification %d (%s, %s) deferred %.1fs by its channel: %s", name, c.id,
                            c.kind.value, c.subject, exc.after_s, reason)
            else:
                lost(c, name, "on_failure", f"no deferral recorded: {reason}")
            return
        at = self.retry.next_attempt(c.attempts, now)
        if at is None:
            await self._give_up(c, notice, reason, now)
            return
        if isinstance(exc, TryLater):  # the channel said when: no sooner
            at = max(at, now + timedelta(seconds=exc.after_s))
        if await self.store.claims.retry_later(c, reason, at):
            metrics.NOTIFICATION_RETRIES.labels(notifier=name).inc()
            log.warning("%s notification %d (%s, %s) failed on attempt %d, retrying in %.1fs: %s", name,
                        c.id, c.kind.value, c.subject, c.attempts, (at - now).total_seconds(), reason)
        else:
            lost(c, name, "on_failure", f"no retry recorded: {reason}")

    async def _give_up(self, c: AnyClaimed, notice: Outgoing, reason: str,
                       now: datetime) -> None:
        """Dead-letter the notification, or say the claim was lost if another worker holds it now."""
        name = self.notifier.name
        if not await dead_letter(self.store, c, reason, notifier=name, notice=notice, fallback=self.fallback, now=now):
            lost(c, name, "on_failure", f"not dead-lettered: {reason}")
