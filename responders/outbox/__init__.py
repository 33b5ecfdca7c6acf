"""The outbox: notifications recorded in the database go out through each notifier's delivery stages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from responders.notifiers.base import Budgeted, Notifier
from responders.notifiers.console.notifier import ConsoleNotifier
from responders.outbox.stages import Pipeline, Retry, notice_of
from responders.store.notices import AnyClaimed
from responders.store.rooms import Store
from warden.kit.loop import PollingLoop
from warden.kit.retry import Backoff

log = logging.getLogger("warden.outbox")


class Outbox:
    """At-least-once delivery from the DB, one pipeline of stages per notifier. A pass claims what is due (within
    each channel's send budget, pages first) and gives each notifier channel its share at the same time (in order
    within a channel), so a slow, failing or rate-limited channel holds up no other. `loop` runs the passes;
    `wake()` asks for one now."""

    def __init__(self, store: Store, notifiers: Sequence[Notifier], *, clock: Callable[[], datetime],
                 max_attempts: int, backoff_s: float, lease_s: float, poll_s: float) -> None:
        self.store, self.clock = store, clock
        # No cap on the delay: the attempt count bounds it (backoff_s, doubling, for max_attempts - 1 retries).
        retry = Retry(Backoff(initial_s=backoff_s, max_s=float("inf")), max_attempts)
        fallback = ConsoleNotifier()  # where a dead letter's content goes, so it is never lost
        self.notifiers = {n.name: n for n in notifiers}
        self.pipelines = {n.name: Pipeline(n, store, retry=retry, clock=clock, fallback=fallback) for n in notifiers}
        self.lease = timedelta(seconds=lease_s)
        self.loop = PollingLoop("warden.outbox", poll_s, self.deliver_due, log)
        self._timer: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        self.loop.wake()

    def nudge(self) -> None:
        """Something not urgent was recorded (a member joined a group's digest): a pass now, unless one is set
        already for when the channel budget frees the next message (it will carry this too). In a storm this keeps
        each member from costing a claim pass that the budget turns away."""
        if self._timer is not None and not self._timer.cancelled() and \
                self._timer.when() > asyncio.get_running_loop().time():
            return
        self.wake()

    def spend(self, c: AnyClaimed) -> Mapping[str, int]:
        """What the notification would post, per channel, for the budget; nothing for a notifier without one."""
        notifier = self.notifiers.get(c.notifier)
        if not isinstance(notifier, Budgeted):
            return {}
        return {channel: n for channel, n in notifier.spend(notice_of(c)).items() if channel}  # no contact: no budget

    def _wake_in(self, seconds: float) -> None:
        """Run a pass when the channel budget frees the next deferred notification (polling would be late)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        if self._timer is not None and not self._timer.cancelled() and self._timer.when() <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self.wake)

    async def deliver_due(self) -> int:
        """One pass: claim what is due and try each once. Returns how many were tried."""
        claimed = await self.store.outbox.claim_due(self.clock(), self.lease, spend=self.spend)
        if self.store.outbox.budget_wait_s is not None:
            self._wake_in(self.store.outbox.budget_wait_s + 0.01)
        lanes: dict[tuple[str, str], list[AnyClaimed]] = {}
        for c in claimed:
            channels = list(self.spend(c))
            lanes.setdefault((c.notifier, channels[0] if channels else ""), []).append(c)
        outcomes = await asyncio.gather(*(self._deliver(self.pipelines[name], share)
                                          for (name, _), share in lanes.items()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(claimed)

    async def _deliver(self, pipeline: Pipeline, share: list[AnyClaimed]) -> None:
        """In order; while they wait their turn, the rows not started yet are held every half lease, so that the
        lease only has to cover a worker that stopped (paused, killed), not a long batch."""
        waiting, done = list(share), asyncio.Event()
        keeper = asyncio.create_task(self._hold(waiting, done), name="warden-outbox-hold")
        try:
            while waiting:
                await pipeline.deliver(waiting.pop(0))
        finally:
            # Told to end, never cancelled: a cancel in the middle of its query can hand the pool a connection
            # still busy with it, and the next session on that connection waits forever (seen: an outbox stalled).
            done.set()
            await keeper

    async def _hold(self, waiting: list[AnyClaimed], done: asyncio.Event) -> None:
        every = self.lease.total_seconds() / 2
        while True:
            try:
                await asyncio.wait_for(done.wait(), every)
                return
            except TimeoutError:
                pass
            try:
                await self.store.claims.hold(waiting, self.clock() + self.lease)
            except Exception as exc:  # noqa: BLE001 - the rows then run out as before: another worker takes them
                log.warning("could not hold the rows waiting in this batch (%s: %s)", type(exc).__name__, exc)
