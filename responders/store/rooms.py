"""The composition root of the store: every room built once over one engine, each given the rooms it writes through."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from responders.budget import Budget
from responders.db import session_factory
from responders.store.claims import Claims
from responders.store.decisions import Decisions
from responders.store.escalation import Escalations
from responders.store.incidents import Incidents
from responders.store.outbox import Outbox
from responders.store.security import SecurityLog
from responders.store.timeline import Timeline
from warden.contract.matrix import Matrix


@dataclass(frozen=True)
class Store:
    """The rooms of one worker's incidents database; callers take the room they need."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    timeline: Timeline
    outbox: Outbox
    claims: Claims
    incidents: Incidents
    escalations: Escalations
    decisions: Decisions
    security: SecurityLog

    @property
    def notifiers(self) -> tuple[str, ...]:
        return self.outbox.notifiers

    @classmethod
    def build(cls, engine: AsyncEngine, notifiers: Sequence[str], *, budget: Budget | None = None,
              api_url: str | None = None, live_policy: Callable[[], str] | None = None,
              live_matrix: Callable[[], tuple[str, Matrix]] | None = None) -> Store:
        """`live_policy` stamps the live policy's sha256 on timeline entries, `live_matrix` gives the matrix whose
        notification control pages (None: what the incident was opened under, the built-in defaults)."""
        timeline = Timeline(engine, live_policy)
        outbox = Outbox(engine, notifiers, budget=budget, api_url=api_url)
        decisions = Decisions(engine, timeline, outbox)
        return cls(engine=engine, sessions=session_factory(engine), timeline=timeline, outbox=outbox,
                   claims=Claims(engine, timeline), decisions=decisions,
                   incidents=Incidents(engine, timeline, outbox, decisions, live_matrix=live_matrix),
                   escalations=Escalations(engine, timeline, outbox), security=SecurityLog(engine))
