"""The delivery stages around a one-method notifier, after Alertmanager's notify pipeline: dedup (never a second
root message), retry with backoff, record the delivery, dead-letter. Notifiers only send; these decide the rest."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from responders.notifiers.base import FindsRoot, Notice, NoticeKind, Notifier, Posted, Undeliverable
from responders.notifiers.console import ConsoleNotifier
from responders.store import Claimed, IncidentStore
from warden.contract import metrics
from warden.contract.redact import redact_text
from warden.kit.retry import Backoff

log = logging.getLogger("warden.outbox")
REASON_MAX_CHARS = 300


def notice_of(c: Claimed) -> Notice:
    return Notice(kind=c.kind, incident=c.incident, target=c.target, note=c.note, root=c.root)


async def dedup(notifier: Notifier, c: Claimed, notice: Notice) -> Posted:
    """Send, unless the root is out already: its stored reference first, then (after an interrupted attempt, which
    may have reached the notifier) whatever the notifier finds, if it can look. A follow-up whose root was
    dead-lettered has nothing to thread under and is undeliverable."""
    if c.kind is not NoticeKind.root:
        if c.root is None:
            raise Undeliverable(f"the incident's {notifier.name} root message was dead-lettered")
        return await notifier.send(notice)
    if c.root is not None:  # the stored reference: the root went out and was recorded
        return c.root
    if c.attempts > 1 and isinstance(notifier, FindsRoot):
        found = await notifier.find_root(c.incident, c.target)
        if found is not None:
            log.warning("incident #%d: %s root message found by its key after an interrupted delivery",
                        c.incident.id, notifier.name)
            return found
    return await notifier.send(notice)


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


async def record(store: IncidentStore, c: Claimed, posted: Posted, *, notifier: str, now: datetime) -> None:
    """The delivery, on the notification row (and as the notifier's root message of the incident), plus metrics."""
    await store.mark_delivered(c, posted, now)
    metrics.NOTIFICATIONS_DELIVERED.labels(notifier=notifier, kind=c.kind.value).inc()
    if c.kind in (NoticeKind.root, NoticeKind.repeat):  # the responder was told about findings
        metrics.ALERTS.labels(channel=notifier, rule=c.incident.rule).inc()


async def dead_letter(store: IncidentStore, c: Claimed, reason: str, *, notifier: str, notice: Notice,
                      fallback: ConsoleNotifier, now: datetime) -> None:
    """Give up on a notification without losing it: the row and the timeline say so, a metric counts it and the
    console gets an ERROR line with everything it carried."""
    await store.dead_letter(c, reason, now)
    metrics.NOTIFICATIONS_DEAD.labels(notifier=notifier, kind=c.kind.value).inc()
    fallback.dead_letter_alert(notice, reason)


class Pipeline:
    """One notifier's stages. `deliver` tries a claimed notification once and leaves it delivered, due again
    later, or dead; it raises only when the database does (the row then waits for its lease to end)."""

    def __init__(self, notifier: Notifier, store: IncidentStore, *, retry: Retry, clock: Callable[[], datetime],
                 fallback: ConsoleNotifier) -> None:
        self.notifier, self.store, self.retry, self.clock, self.fallback = notifier, store, retry, clock, fallback

    async def deliver(self, c: Claimed) -> None:
        name = self.notifier.name
        notice = notice_of(c)
        try:
            posted = await dedup(self.notifier, c, notice)
        except asyncio.CancelledError:
            raise
        except Undeliverable as exc:
            await dead_letter(self.store, c, str(exc), notifier=name, notice=notice, fallback=self.fallback,
                              now=self.clock())
            return
        except Exception as exc:  # noqa: BLE001 - every failure is retried, then dead-lettered, never dropped
            reason = redact_text(f"{type(exc).__name__}: {exc}", REASON_MAX_CHARS)
            now = self.clock()
            at = self.retry.next_attempt(c.attempts, now)
            if at is None:
                await dead_letter(self.store, c, reason, notifier=name, notice=notice, fallback=self.fallback,
                                  now=now)
                return
            log.warning("%s notification %d (%s, incident #%d) failed on attempt %d, retrying in %.1fs: %s", name,
                        c.id, c.kind.value, c.incident.id, c.attempts, (at - now).total_seconds(), reason)
            await self.store.retry_later(c, reason, at)
            return
        await record(self.store, c, posted, notifier=name, now=self.clock())
