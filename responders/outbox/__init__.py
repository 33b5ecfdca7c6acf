"""The outbox: notifications recorded in the database go out through each notifier's delivery stages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from responders.notifiers.base import Notifier
from responders.notifiers.console import ConsoleNotifier
from responders.outbox.stages import Pipeline, Retry
from responders.store import Claimed, ClaimedDigest, IncidentStore
from warden.kit.loop import PollingLoop
from warden.kit.retry import Backoff

log = logging.getLogger("warden.outbox")


class Outbox:
    """At-least-once delivery from the DB, one pipeline of stages per notifier. A pass claims what is due and
    gives each notifier its share at the same time (in order within a notifier), so a slow or failing notifier
    holds up no other. `loop` runs the passes; `wake()` asks for one now."""

    def __init__(self, store: IncidentStore, notifiers: Sequence[Notifier], *, clock: Callable[[], datetime],
                 max_attempts: int, backoff_s: float, lease_s: float, poll_s: float) -> None:
        self.store, self.clock = store, clock
        # No cap on the delay: the attempt count bounds it (backoff_s, doubling, for max_attempts - 1 retries).
        retry = Retry(Backoff(initial_s=backoff_s, max_s=float("inf")), max_attempts)
        fallback = ConsoleNotifier()  # where a dead letter's content goes, so it is never lost
        self.pipelines = {n.name: Pipeline(n, store, retry=retry, clock=clock, fallback=fallback) for n in notifiers}
        self.lease = timedelta(seconds=lease_s)
        self.loop = PollingLoop("warden.outbox", poll_s, self.deliver_due, log)

    def wake(self) -> None:
        self.loop.wake()

    async def deliver_due(self) -> int:
        """One pass: claim what is due and try each once. Returns how many were tried."""
        claimed = await self.store.claim_due(self.clock(), self.lease)
        shares: dict[str, list[Claimed | ClaimedDigest]] = {}
        for c in claimed:
            shares.setdefault(c.notifier, []).append(c)
        outcomes = await asyncio.gather(*(self._deliver(self.pipelines[name], share)
                                          for name, share in shares.items()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(claimed)

    async def _deliver(self, pipeline: Pipeline, share: list[Claimed | ClaimedDigest]) -> None:
        """In order; while they wait their turn, the rows not started yet are held every half lease, so that the
        lease only has to cover a worker that stopped (paused, killed), not a long batch."""
        waiting = list(share)
        keeper = asyncio.create_task(self._hold(waiting), name="warden-outbox-hold")
        try:
            while waiting:
                await pipeline.deliver(waiting.pop(0))
        finally:
            keeper.cancel()

    async def _hold(self, waiting: list[Claimed | ClaimedDigest]) -> None:
        every = self.lease.total_seconds() / 2
        while True:
            await asyncio.sleep(every)
            try:
                await self.store.hold(waiting, self.clock() + self.lease)
            except Exception as exc:  # noqa: BLE001 - the rows then run out as before: another worker takes them
                log.warning("could not hold the rows waiting in this batch (%s: %s)", type(exc).__name__, exc)
