"""Escalation: an unacknowledged page moves to the next owner of its frozen chain when its deadline passes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from responders.db import session_factory
from responders.db.models import Incident
from responders.incidents import Status, escalation_deadline, escalation_note
from responders.store.notices import NoticeKind
from responders.store.outbox import Outbox
from responders.store.timeline import Timeline
from warden.contract.findings import FindingOwners


class Escalations:
    """Finds the pages whose escalation deadline passed and escalates each, once, whatever the number of workers."""

    def __init__(self, engine: AsyncEngine, timeline: Timeline, outbox: Outbox) -> None:
        self.sessions = session_factory(engine)
        self.timeline = timeline
        self.outbox = outbox

    async def due_escalations(self, now: datetime) -> list[int]:
        async with self.sessions.begin() as s:
            return list((await s.execute(
                select(Incident.id).where(Incident.status == Status.open.value, Incident.escalate_at <= now)
                .order_by(Incident.escalate_at)
            )).scalars())

    async def escalate(self, incident_id: int, now: datetime) -> int | None:
        """Move an unacknowledged incident to the next step of its frozen chain; the new step, or None."""
        async with self.sessions.begin() as s:
            incident = (await s.execute(
                select(Incident).where(Incident.id == incident_id).with_for_update()
            )).scalar_one()
            if incident.status != Status.open.value or incident.escalate_at is None or incident.escalate_at > now:
                return None  # acknowledged, closed or escalated by another worker meanwhile
            owners = FindingOwners.model_validate(incident.owners)
            step = incident.escalation_step + 1
            incident.escalate_at = escalation_deadline(owners.escalation, step, now)
            incident.updated_at = now
            if step >= len(owners.escalation):
                await self.timeline.log_entry(s, incident.id, now, "escalation_exhausted",
                                              detail={"steps": len(owners.escalation)})
                return None
            incident.escalation_step = step
            target = owners.escalation[step].owner
            note = escalation_note(owners, step)
            await self.timeline.log_entry(s, incident.id, now, "escalated",
                                          detail={"step": step, "to": target.id, "why": note})
            await self.outbox.add_notifications(s, incident.id, NoticeKind.escalation, target, now=now, note=note)
            return step
