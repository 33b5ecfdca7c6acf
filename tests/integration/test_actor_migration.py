"""Migration 0011 on SQLite and PostgreSQL: the one-string `slack_user` of the timeline and the decisions becomes a
notifier-neutral actor (notifier, address, user_id), and the trail written before it still verifies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from responders.audit import GENESIS, entry_hash, timeline_content
from responders.db import make_engine, migrate
from responders.db.models import ContainmentDecision
from responders.trail import Trail
from tests.support.incident_db import insert_old_incident, upgrade_to
from warden.contract.actors import Actor

AT = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)
# (kind, slack_user) as releases up to 0010 wrote them: a Slack click, a refused API call with the owner it claimed,
# a break-glass and a pre-API CLI decision, and one of Warden's own entries.
OLD_TIMELINE = [("opened", None), ("acknowledged", "U0KAI"), ("refused", "api:3f9a0c:marco"),
                ("containment_approve", "break-glass:sam"), ("containment_deny", "cli:ops")]
OLD_DECISIONS = {7: "U0JORDAN", 8: "api:3f9a0c", 9: "break-glass:sam", 10: "cli:ops"}


async def test_the_migration_splits_old_identities_into_actors_and_the_trail_still_verifies(
        empty_incident_db: str) -> None:
    engine = make_engine(empty_incident_db)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0010")
            for incident_id in OLD_DECISIONS:
                await insert_old_incident(conn, incident_id, AT.replace(tzinfo=None))
            prev = GENESIS
            for seq, (kind, identity) in enumerate(OLD_TIMELINE, start=1):
                at = AT + timedelta(seconds=seq)
                detail = {"n": seq}
                digest = entry_hash("7", seq, prev, timeline_content(
                    incident_id=7, at=at, kind=kind, actor="warden", identity=identity, policy_sha256="sha",
                    detail=detail))
                await conn.execute(text(
                    "INSERT INTO timeline (incident_id, at, kind, actor, slack_user, detail, policy_sha256, seq, "
                    "prev_hash, hash) VALUES (7, :at, :kind, 'warden', :who, :detail, 'sha', :seq, :prev, :hash)"),
                    {"at": at.replace(tzinfo=None), "kind": kind, "who": identity, "detail": json.dumps(detail),
                     "seq": seq, "prev": prev, "hash": digest})
                prev = digest
            for incident_id, identity in OLD_DECISIONS.items():
                await conn.execute(text(
                    "INSERT INTO decisions (incident_id, decision, owner_id, slack_user, at) VALUES "
                    "(:id, 'approve', 'jordan', :who, :at)"), {"id": incident_id, "who": identity,
                                                               "at": AT.replace(tzinfo=None)})
        await migrate(engine)
        async with engine.connect() as conn:
            timeline = (await conn.execute(text(
                "SELECT notifier, address, user_id FROM timeline ORDER BY seq"))).all()
            columns = {t: await conn.run_sync(_column_names, t) for t in ("timeline", "decisions")}
        async with AsyncSession(engine) as session:
            decisions = (await session.execute(sa.select(ContainmentDecision).order_by(
                ContainmentDecision.incident_id))).scalars().all()
        result = await Trail(engine).verify()
        async with engine.begin() as conn:  # the parts are in the chain: a changed notifier breaks it
            await conn.execute(text("UPDATE timeline SET notifier = 'teams' WHERE user_id = 'U0KAI'"))
        broken = await Trail(engine).verify()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in timeline] == [
        (None, None, None), ("slack", "", "U0KAI"), ("api", "", "3f9a0c:marco"), ("break-glass", "", "sam"),
        ("cli", "", "ops")]
    assert [(d.incident_id, d.via) for d in decisions] == [
        (7, Actor("slack", "U0JORDAN")), (8, Actor("api", "3f9a0c")), (9, Actor("break-glass", "sam")),
        (10, Actor("cli", "ops"))]
    assert [d.identity for d in decisions] == list(OLD_DECISIONS.values()), "the identity each showed before"
    assert all("slack_user" not in c and {"notifier", "address", "user_id"} <= c for c in columns.values())
    assert (result.ok, result.entries) == (True, len(OLD_TIMELINE))
    assert [(b.chain, b.seq) for b in broken.breaks] == [("7", 2)]


def _column_names(sync: sa.Connection, table: str) -> set[str]:
    """The columns a table has after the migration, read through SQLAlchemy's inspector."""
    return {c["name"] for c in sa.inspect(sync).get_columns(table)}
