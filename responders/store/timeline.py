"""The incidents' timeline: an append-only hash chain per incident, the only way anything is written to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders.audit import GENESIS, entry_hash, timeline_content
from responders.db import session_factory
from responders.db.models import Incident, TimelineEntry
from responders.store.common import WARDEN, redact_detail
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef


class Timeline:
    """Appends and reads incidents' timeline entries. `live_policy` gives the sha256 of the policy live in this
    process, stamped on every entry; None (a tool with no policy loaded) stamps the policy the incident was opened
    under."""

    def __init__(self, engine: AsyncEngine, live_policy: Callable[[], str] | None = None) -> None:
        self.sessions = session_factory(engine)
        self.live_policy = live_policy

    async def log_entry(self, s: AsyncSession, incident_id: int, now: datetime, kind: str, *, actor: str = WARDEN,
                        by: Actor | None = None, detail: dict[str, Any] | None = None) -> None:
        """Append one entry to the incident's hash chain (the only way anything is written to the timeline).

        The incident row is locked first, so two workers appending to one incident take turns and each reads the
        other's entry as its predecessor; the unique (incident_id, seq) makes a fork impossible even so. String
        values are redacted again: nothing that reaches the trail may carry a secret. `by`: the person's identity on
        the channel they acted through, when a person acted."""
        # FOR NO KEY UPDATE: appenders take turns, yet a transaction that only inserted a row referencing the
        # incident (its FK takes KEY SHARE) never blocks us, so two deliveries of one incident cannot deadlock.
        policy = (await s.execute(
            select(Incident.policy_sha256).where(Incident.id == incident_id).with_for_update(key_share=True)
        )).scalar_one()
        live = self.live_policy() if self.live_policy is not None else None
        last = (await s.execute(
            select(TimelineEntry.seq, TimelineEntry.hash).where(TimelineEntry.incident_id == incident_id)
            .order_by(TimelineEntry.seq.desc()).limit(1)
        )).first()
        seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
        entry = TimelineEntry(incident_id=incident_id, at=now, kind=kind, actor=actor,
                              notifier=None if by is None else by.notifier, address=None if by is None else by.address,
                              user_id=None if by is None else by.user,
                              detail=redact_detail(detail or {}), policy_sha256=live or policy, seq=seq,
                              prev_hash=prev)
        entry.hash = entry_hash(str(incident_id), seq, prev, timeline_content(
            incident_id=incident_id, at=now, kind=kind, actor=actor, identity=None if by is None else by.identity,
            policy_sha256=entry.policy_sha256, detail=entry.detail))
        s.add(entry)
        await s.flush()  # the next entry of this transaction reads this one as its predecessor

    async def entries(self, incident_id: int) -> list[TimelineEntry]:
        """The incident's timeline, oldest first."""
        async with self.sessions.begin() as s:
            return list((await s.execute(
                select(TimelineEntry).where(TimelineEntry.incident_id == incident_id).order_by(TimelineEntry.id)
            )).scalars())

    async def note_silence(self, incident_id: int, silence_id: int, matchers: Sequence[str], *, owner: OwnerRef,
                           by: Actor, now: datetime) -> None:
        """The incident's timeline says a silence was made from it, by whom."""
        async with self.sessions.begin() as s:
            await self.log_entry(s, incident_id, now, "silence_added", actor=owner.id, by=by,
                                 detail={"silence": silence_id, "matchers": list(matchers)})
