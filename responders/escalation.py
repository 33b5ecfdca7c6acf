"""Escalation: an incident nobody acknowledged within its step's timeout goes to the next owner of its chain.

Deadlines live in the DB (`incidents.escalate_at`), so a restarted worker picks up exactly where it stopped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from responders.store.escalation import Escalations
from warden.kit.loop import PollingLoop
from warden.telemetry import metrics

log = logging.getLogger("warden.escalation")


class Escalator:
    """Checks for due deadlines every `poll_s` (`loop`); each escalation is a compare-and-set, so several workers
    never double it."""

    def __init__(self, store: Escalations, *, clock: Callable[[], datetime], poll_s: float,
                 on_escalated: Callable[[], None]) -> None:
        self.store, self.clock, self.on_escalated = store, clock, on_escalated
        self.loop = PollingLoop("warden.escalation", poll_s, self.escalate_due, log)

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
