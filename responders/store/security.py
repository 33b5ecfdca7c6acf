"""The security record: refused requests on their own hash chain, and the signatures already seen (replays)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from responders.audit import GENESIS, SECURITY_CHAIN, entry_hash, security_content
from responders.db import session_factory
from responders.db.models import SecurityEvent, SeenInteraction
from responders.store.common import redact_detail

_SECURITY_CHAIN_LOCK = 0x57A2DE5  # pg advisory lock id of the security events' chain


class SecurityLog:
    """Refused requests (forged, stale, replayed, malformed) and the signed requests seen, shared by every worker."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = session_factory(engine)
        self.dialect = engine.dialect.name

    async def record_security_event(self, source: str, kind: str, now: datetime, detail: dict[str, Any]) -> None:
        """A refused request (forged, stale, replayed, malformed), for the audit trail; the caller leaves out the
        body."""
        async with self.sessions.begin() as s:
            if self.dialect == "postgresql":  # one chain: appenders take turns (SQLite writers already do)
                await s.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _SECURITY_CHAIN_LOCK})
            last = (await s.execute(
                select(SecurityEvent.seq, SecurityEvent.hash).order_by(SecurityEvent.seq.desc()).limit(1)
            )).first()
            seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
            clean = redact_detail(detail)
            s.add(SecurityEvent(at=now, source=source, kind=kind, detail=clean, seq=seq, prev_hash=prev,
                                hash=entry_hash(SECURITY_CHAIN, seq, prev, security_content(
                                    at=now, source=source, kind=kind, detail=clean))))

    async def first_sighting(self, signature: str, now: datetime, keep: timedelta) -> bool:
        """True the first time a signed request is seen; False for a replay within `keep`."""
        try:
            async with self.sessions.begin() as s:
                await s.execute(delete(SeenInteraction).where(SeenInteraction.seen_at < now - keep))
                s.add(SeenInteraction(signature=signature, seen_at=now))
        except IntegrityError:
            return False
        return True
