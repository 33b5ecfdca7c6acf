"""The store's rooms on a fresh, migrated incident database, for tests that speak to one room directly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import select

from responders.db import make_engine, migrate
from responders.db.models import Incident, Notification
from responders.store.rooms import Store
from tests.support.incident_helpers import ONE_GROUP_PER_INCIDENT
from warden.contract.matrix import Matrix

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@asynccontextmanager
async def rooms_on(url: str, notifiers: Sequence[str] = ("slack",), *,
                   live_policy: Callable[[], str] | None = None,
                   matrix: Matrix = ONE_GROUP_PER_INCIDENT) -> AsyncIterator[Store]:
    """Every room over one engine on `url` (migrated), one notification group per incident unless `matrix` groups
    pages otherwise."""
    engine = make_engine(url)
    try:
        await migrate(engine)
        yield Store.build(engine, notifiers, live_policy=live_policy,
                          live_matrix=lambda: ("test-matrix", matrix))
    finally:
        await engine.dispose()


async def notifications(store: Store) -> list[Notification]:
    async with store.sessions() as s:
        return list((await s.execute(select(Notification).order_by(Notification.id))).scalars())


async def incident_row(store: Store, incident_id: int) -> Incident:
    async with store.sessions() as s:
        row = await s.get(Incident, incident_id)
        assert row is not None
        return row
