"""The outbox loop: recorded notifications go out, are marked delivered with their ts, or are dead-lettered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from responders.notifiers.base import Notice, NoticeKind, Notifier, Posted, Undeliverable
from responders.notifiers.console import ConsoleNotifier
from responders.store import Claimed, IncidentStore
from warden.contract import metrics
from warden.contract.redact import redact_text
from warden.kit.loop import PollingLoop

log = logging.getLogger("warden.outbox")


class Outbox:
    """At-least-once delivery from the DB. A root message is never posted twice: a retry first checks the stored
    ts, then (after an interrupted attempt) looks for the incident key in the channel's history. `loop` runs the
    passes; `wake()` asks for one now."""

    def __init__(self, store: IncidentStore, notifier: Notifier, *, clock: Callable[[], datetime],
                 max_attempts: int, backoff_s: float, lease_s: float, poll_s: float) -> None:
        self.store, self.notifier, self.clock = store, notifier, clock
        self.fallback = ConsoleNotifier()  # where a dead letter's content goes, so it is never lost
        self.max_attempts, self.backoff_s = max_attempts, backoff_s
        self.lease = timedelta(seconds=lease_s)
        self.loop = PollingLoop("warden.outbox", poll_s, self.deliver_due, log)

    def wake(self) -> None:
        self.loop.wake()

    async def deliver_due(self) -> int:
        """One pass: claim what is due and try each once. Returns how many were tried."""
        claimed = await self.store.claim_due(self.clock(), self.lease)
        for c in claimed:
            await self._deliver(c)
        return len(claimed)

    async def _deliver(self, c: Claimed) -> None:
        notice = Notice(kind=c.kind, incident=c.incident, target=c.target, note=c.note, root=c.root)
        try:
            posted = await self._send(c, notice)
        except asyncio.CancelledError:
            raise
        except Undeliverable as exc:
            await self._dead_letter(c, notice, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - every failure is retried, then dead-lettered, never dropped
            reason = redact_text(f"{type(exc).__name__}: {exc}", 300)
            if c.attempts >= self.max_attempts:
                await self._dead_letter(c, notice, reason)
                return
            delay = self.backoff_s * 2 ** (c.attempts - 1)
            log.warning("notification %d (%s, incident #%d) failed on attempt %d, retrying in %.1fs: %s",
                        c.id, c.kind.value, c.incident.id, c.attempts, delay, reason)
            await self.store.retry_later(c, reason, self.clock() + timedelta(seconds=delay))
            return
        await self.store.mark_delivered(c, self.notifier.name, posted, self.clock())
        metrics.NOTIFICATIONS_DELIVERED.labels(notifier=self.notifier.name, kind=c.kind.value).inc()
        if c.kind in (NoticeKind.root, NoticeKind.repeat):  # the responder was told about findings
            metrics.ALERTS.labels(channel=self.notifier.name, rule=c.incident.rule).inc()

    async def _send(self, c: Claimed, notice: Notice) -> Posted:
        if c.kind is not NoticeKind.root:
            if c.root is None:
                raise Undeliverable("the incident's root message was dead-lettered")
            return await self.notifier.send(notice)
        if c.root is not None:  # the stored ts: the root went out and was recorded
            return c.root
        if c.attempts > 1:  # an earlier attempt may have reached Slack before it was interrupted
            found = await self.notifier.find_root(c.incident, c.target)
            if found is not None:
                log.warning("incident #%d: root message found by its key after an interrupted delivery",
                            c.incident.id)
                return found
        return await self.notifier.send(notice)

    async def _dead_letter(self, c: Claimed, notice: Notice, reason: str) -> None:
        await self.store.dead_letter(c, self.notifier.name, reason, self.clock())
        metrics.NOTIFICATIONS_DEAD.labels(notifier=self.notifier.name, kind=c.kind.value).inc()
        self.fallback.dead_letter_alert(notice, reason)
