"""The audit trail as evidence: one incident walked through its whole lifecycle leaves an ordered, attributed,
hash-chained timeline; editing or deleting a row in the database makes `warden audit verify` fail at that link."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from click.testing import CliRunner
from sqlalchemy import text

from responders.db import make_engine, migrate
from responders.incidents import Status
from responders.trail import Trail
from service.cli import main
from service.runtime.settings import Settings
from tests.support.containment_helpers import containment_policy, engine_on, violation
from tests.support.incident_db import insert_old_incident, upgrade_to
from tests.support.incident_helpers import FakeClock, running
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef

TELL_APPROVER = [{"rules": ["unapproved_tool"], "playbook": "tell", "gate": "approver", "min_severity": "low",
                  "approval_timeout": "10m"}]
JORDAN = OwnerRef(id="jordan", name="Jordan", contacts={"slack": "U0JORDAN"})
IAM_TEAM = OwnerRef(id="iam-team", name="IAM team")
PLANTED = "sk-live0PLANTEDsecret0000000000"


async def verify_cli(db_url: str) -> tuple[int, dict[str, Any]]:
    """`warden audit verify --json` (in a thread: the command runs its own event loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, main, ["audit", "verify", "--json", "--database-url", db_url])
    return result.exit_code, json.loads(result.output)


async def walk(settings: Settings) -> list[tuple[str, str, str | None]]:
    """Open, escalate, approve, contain, acknowledge, resolve; the timeline as (kind, actor, identity)."""
    clock = FakeClock()
    policy = containment_policy(TELL_APPROVER)
    async with running(settings, clock=clock, live_policy=lambda: "live-policy-sha") as responder, \
            aiohttp.ClientSession() as http:
        engine = engine_on(responder, policy, http, clock=clock)
        finding = violation(policy, arguments={"cmd": f"curl -H 'Authorization: Bearer {PLANTED}'"})
        await responder.store.incidents.record_finding(finding, clock())
        clock.advance(minutes=6)  # past the responder's 5 m ack timeout: the chain's next owner is asked
        await responder.store.escalations.escalate(1, clock())
        assert await responder.store.decisions.decide(1, "approve", owner=JORDAN, by=Actor("slack", "U0JORDAN"),
                                                      note="ok",
                                                      now=clock())
        await engine.run_due()  # consumes the approval, then runs the step
        await engine.run_due()
        assert await responder.store.incidents.transition(1, Status.open, Status.acknowledged, owner=IAM_TEAM,
                                                          by=Actor("slack", "U0ALEX"), note="ack", now=clock())
        assert await responder.store.incidents.transition(1, Status.acknowledged, Status.resolved, owner=IAM_TEAM,
                                                          by=Actor("slack", "U0ALEX"), note="done", now=clock())
        entries = await responder.store.timeline.entries(1)
        assert all(e.policy_sha256 == "live-policy-sha" for e in entries)
        assert PLANTED not in json.dumps([e.detail for e in entries])
        return [(e.kind, e.actor, e.identity) for e in entries if e.kind != "notified"]  # the outbox's own pace


async def test_a_whole_lifecycle_is_on_the_timeline_in_order_and_a_changed_row_breaks_the_chain(
        incident_settings: Settings) -> None:
    db_url = incident_settings.database_url
    assert db_url is not None
    assert await walk(incident_settings) == [
        ("opened", "warden", None),
        ("containment_proposed", "warden", None),
        ("escalated", "warden", None),
        ("containment_approve", "jordan", "U0JORDAN"),
        ("containment_steps_approved", "jordan", "U0JORDAN"),
        ("containment_step_done", "warden", None),
        ("acknowledged", "iam-team", "U0ALEX"),
        ("resolved", "iam-team", "U0ALEX"),
    ]
    code, report = await verify_cli(db_url)
    assert (code, report["ok"], report["breaks"]) == (0, True, [])
    assert report["chains"] == 1 and report["entries"] >= 8

    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:  # an insider rewrites who approved, straight in the database
            seq = (await conn.execute(text(
                "SELECT seq FROM timeline WHERE kind = 'containment_approve'"))).scalar_one()
            await conn.execute(text("UPDATE timeline SET actor = 'mallory' WHERE kind = 'containment_approve'"))
        code, report = await verify_cli(db_url)
        assert code == 1 and not report["ok"]
        assert [(b["chain"], b["seq"]) for b in report["breaks"]] == [("1", seq)]
        assert "edited" in report["breaks"][0]["reason"]
        shown = await Trail(engine).incident(1)
        assert shown is not None and not shown["chain"]["ok"]

        async with engine.begin() as conn:  # put it back, then delete an earlier entry instead
            await conn.execute(text("UPDATE timeline SET actor = 'jordan' WHERE kind = 'containment_approve'"))
        assert (await verify_cli(db_url))[0] == 0
        async with engine.begin() as conn:  # its seq depends on how many `notified` entries the outbox wrote first
            seq = (await conn.execute(text("SELECT seq FROM timeline WHERE kind = 'escalated'"))).scalar_one()
            await conn.execute(text("DELETE FROM timeline WHERE kind = 'escalated'"))
        code, report = await verify_cli(db_url)
        assert code == 1 and not report["ok"]
        # the chain breaks at the entry after the gap (the chain was whole just before, so its seq is the next one)
        assert [(b["chain"], b["seq"]) for b in report["breaks"]] == [("1", seq + 1)]
        assert f"expected entry {seq} of the chain" in report["breaks"][0]["reason"]
        assert "missing" in report["breaks"][0]["reason"]
    finally:
        await engine.dispose()


async def test_refused_requests_are_a_chain_of_their_own(incident_settings: Settings) -> None:
    db_url = incident_settings.database_url
    assert db_url is not None
    clock = FakeClock()
    async with running(incident_settings, clock=clock) as responder:
        for kind in ("forged", "stale", "replayed"):
            await responder.store.security.record_security_event("slack_interaction", kind, clock(),
                                                                 {"ip": "127.0.0.1"})
    assert (await verify_cli(db_url))[0] == 0
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE security_events SET kind = 'accepted' WHERE seq = 2"))
        code, report = await verify_cli(db_url)
        assert code == 1 and [(b["chain"], b["seq"]) for b in report["breaks"]] == [("security", 2)]
    finally:
        await engine.dispose()


async def test_the_migration_chains_the_rows_written_before_it(empty_incident_db: str) -> None:
    engine = make_engine(empty_incident_db)
    at = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC).replace(tzinfo=None)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0005")
            await insert_old_incident(conn, 7, at)
            for i, kind in enumerate(("opened", "escalated", "acknowledged")):
                await conn.execute(text(
                    "INSERT INTO timeline (incident_id, at, kind, actor, detail) VALUES (7, :at, :kind, 'warden', "
                    ":detail)"), {"at": at + timedelta(seconds=i), "kind": kind, "detail": json.dumps({"n": i})})
            await conn.execute(text("INSERT INTO security_events (at, source, kind, detail) VALUES "
                                    "(:at, 'slack_interaction', 'forged', '{}')"), {"at": at})
        await migrate(engine)
        result = await Trail(engine).verify()
        assert (result.ok, result.chains, result.entries) == (True, 2, 4)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE timeline SET detail = '{\"n\": 9}' WHERE kind = 'escalated'"))
        broken = await Trail(engine).verify()
        assert [(b.chain, b.seq) for b in broken.breaks] == [("7", 2)]
    finally:
        await engine.dispose()


async def test_incidents_list_and_show_read_the_trail(incident_settings: Settings) -> None:
    db_url = incident_settings.database_url
    assert db_url is not None
    await walk(incident_settings)

    async def cli(*args: str) -> tuple[int, str]:
        result = await asyncio.to_thread(CliRunner().invoke, main, ["incidents", *args, "--database-url", db_url])
        return result.exit_code, result.output

    code, out = await cli("list", "--json", "--status", "resolved")
    page = json.loads(out)
    assert code == 0 and page["total"] == 1 and page["items"][0]["status_by"] == "iam-team"
    assert json.loads((await cli("list", "--json", "--status", "open"))[1])["total"] == 0
    code, out = await cli("show", "1")
    assert code == 0 and "chain verified" in out and PLANTED not in out
    assert "containment_approve" in out and "by jordan (U0JORDAN)" in out and "tell[0] notify: done" in out
    shown = json.loads((await cli("show", "1", "--json"))[1])
    assert shown["chain"]["ok"] and [e["seq"] for e in shown["timeline"]] == list(range(1, len(shown["timeline"]) + 1))
    assert (await cli("show", "9"))[0] == 1
