"""The optional `warden.audit` export: timeline entries in id order, each finding (an `opened` or `grouped` entry)
also as an OCSF Detection Finding. At least once: a batch is published while this worker holds the export cursor
locked, and the cursor moves only in the same transaction, after the broker has acknowledged the batch."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders.db import session_factory
from responders.db.models import AuditExport, FindingRecord, Incident, TimelineEntry
from responders.ocsf import detection_finding, timeline_record
from responders.trail import entry_json, incident_json

Publish = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]  # (key, value) pairs, acknowledged on return
_FINDING_KINDS = {"opened": False, "grouped": True}
AUDIT_CURSOR = 1  # the audit_export row of the warden.audit topic export; the trace export has its own


class TimelineCursor:
    """Walks the timeline in id order for one export, at least once: a batch is handed over while this worker holds
    the export's cursor row locked, and the cursor moves in the same transaction, after `send` returned."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime], cursor_id: int, *, batch: int = 500,
                 settle_s: float = 10.0) -> None:
        self.sessions = session_factory(engine)
        self.clock, self.batch, self.cursor_id = clock, batch, cursor_id
        # Ids are taken at insert and committed later: on PostgreSQL an entry can become visible after a higher id.
        # Entries younger than this are left for the next batch, so such a late one is not skipped by the cursor.
        self.settle = timedelta(seconds=settle_s)

    async def export(self, send: Callable[[AsyncSession, list[TimelineEntry]], Awaitable[None]]) -> int:
        """One batch handed to `send` (with the session, to read what the entries point at); how many entries it
        had (0: nothing new). `send` raising leaves the cursor where it was."""
        await self._ensure_cursor()
        async with self.sessions.begin() as s:
            cursor = (await s.execute(select(AuditExport).where(AuditExport.id == self.cursor_id)
                                      .with_for_update())).scalar_one()
            entries = list((await s.execute(select(TimelineEntry).where(
                TimelineEntry.id > cursor.last_timeline_id, TimelineEntry.at <= self.clock() - self.settle)
                                            .order_by(TimelineEntry.id).limit(self.batch))).scalars())
            if not entries:
                return 0
            await send(s, entries)
            cursor.last_timeline_id, cursor.updated_at = entries[-1].id, self.clock()
            return len(entries)

    async def _ensure_cursor(self) -> None:
        try:
            async with self.sessions.begin() as s:
                if await s.get(AuditExport, self.cursor_id) is None:
                    s.add(AuditExport(id=self.cursor_id, last_timeline_id=0, updated_at=self.clock()))
        except IntegrityError:  # another worker added it at the same moment
            pass


class AuditExporter:
    """Publishes what the timeline gained since the last batch."""

    def __init__(self, engine: AsyncEngine, publish: Publish, clock: Callable[[], datetime], *, batch: int = 500,
                 settle_s: float = 10.0) -> None:
        self.cursor = TimelineCursor(engine, clock, AUDIT_CURSOR, batch=batch, settle_s=settle_s)
        self.publish = publish

    async def export(self) -> int:
        """One batch; how many timeline entries it published (0: nothing new)."""
        return await self.cursor.export(self._send)

    async def _send(self, s: AsyncSession, entries: list[TimelineEntry]) -> None:
        records: list[tuple[bytes, bytes]] = []
        for entry in entries:
            key = str(entry.incident_id).encode()
            link = entry_json(entry)
            records.append((key, _dumps(timeline_record(link, entry.incident_id))))
            finding_id = entry.detail.get("finding_id")
            if entry.kind in _FINDING_KINDS and isinstance(finding_id, str):
                found = await s.get(FindingRecord, finding_id)
                incident = await s.get(Incident, entry.incident_id)
                if found is not None and incident is not None:
                    records.append((key, _dumps(detection_finding(
                        finding_id=found.finding_id, event_id=found.event_id, rule=found.rule,
                        severity=found.severity, ts=found.ts, recorded_at=found.recorded_at,
                        evidence=dict(found.evidence), grouped=_FINDING_KINDS[entry.kind],
                        incident=incident_json(incident), entry=link))))
        await self.publish(records)


def _dumps(record: dict[str, object]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode()
