"""Escalation: an incident nobody acknowledged within its step's timeout goes to the next owner of its chain.

Deadlines live in the DB (`incidents.escalate_at`), so a restarted worker picks up exactly where it stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from responders.store import IncidentStore
from warden.contract import metrics

log = logging.getLogger("warden.escalation")


class Escalator:
    """Polls for due deadlines; each escalation is a compare-and-set, so several workers never double it."""

    def __init__(self, store: IncidentStore, *, clock: Callable[[], datetime], poll_s: float,
                 on_escalated: Callable[[], None]) -> None:
        self.store, self.clock, self.poll_s, self.on_escalated = store, clock, poll_s, on_escalated

    async def run(self) -> None:
        while True:
            try:
                await self.escalate_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the deadlines stay in the DB; the next pass retries
                log.exception("escalation pass failed")
            await asyncio.sleep(self.poll_s)

    async def escalate_due(self) -> int:
        """Escalate every incident whose deadline passed. Returns how many moved to a next step."""
        now = self.clock()
        moved = 0
        for incident_id in await self.store.due_escalations(now):
            step = await self.store.escalate(incident_id, now)
            if step is not None:
                moved += 1
                metrics.ESCALATIONS.inc()
                log.warning("incident #%d escalated to step %d of its chain", incident_id, step + 1)
        if moved:
            self.on_escalated()
        return moved
