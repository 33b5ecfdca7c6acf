"""Response tiers on the responder side (both backends, the local Slack Web API): a page notifies as ever, a review
finding waits for its responder's periodic digest (delivered once through the outbox, however many workers), a log
finding tells nobody; each is on the hash-chained timeline."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import select, text

from responders.db import make_engine, migrate
from responders.db.models import Incident, Notification, ReviewDigest
from responders.digests import period_end
from responders.incident_responder import IncidentResponder
from responders.incidents import Status
from responders.review_digest import make_digests
from responders.store.incidents import Recorded
from responders.trail import Trail
from service.cli import main
from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import Settings
from service.runtime.web import WebServer
from tests.support.incident_db import insert_old_incident, upgrade_to
from tests.support.incident_helpers import FakeClock, eventually, finding, running
from tests.support.metrics import metric_value
from warden.contract.actors import BREAK_GLASS, Actor
from warden.contract.findings import Finding, OwnerRef
from warden.contract.matrix import Tier
from warden.telemetry import metrics

Row = TypeVar("Row", Incident, Notification, ReviewDigest)  # the tables these tests read
SETTLE_S = 0.6  # a dozen outbox and digest passes at the test settings' 0.05 s


def tiered(tier: Tier, agent: str = "billing-agent-1", tool: str = "shell.exec", **kw: object) -> Finding:
    # the ignore below: kw are finding()'s keyword fields
    return finding(agent, tool, **kw).model_copy(update={"tier": tier})  # type: ignore[arg-type]


async def rows(responder: IncidentResponder, model: type[Row]) -> list[Row]:
    async with responder.store.sessions() as s:
        return list((await s.execute(select(model).order_by(model.id))).scalars())


async def kinds(responder: IncidentResponder, incident_id: int) -> list[str]:
    return [e.kind for e in await responder.store.timeline.entries(incident_id)]


def posts(slack: SlackApiServer) -> list[dict[str, Any]]:
    return [r.args for r in slack.calls("chat.postMessage")]


@asynccontextmanager
async def workers(settings: Settings, clock: FakeClock, n: int = 2) -> AsyncIterator[list[IncidentResponder]]:
    """`n` responders on one database and clock, each running its outbox, escalation and digest loops."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running(settings, clock=clock)) for _ in range(n)]


async def test_a_review_finding_pages_nobody_and_is_in_the_next_digest_exactly_once(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    made_before = metric_value(metrics.REVIEW_DIGESTS)
    review_before = metric_value(metrics.FINDINGS_BY_TIER, tier="review")
    async with workers(incident_settings, clock) as (a, b):
        await a.handle(tiered(Tier.review, tool="shell.exec", evidence={"cmd": "id"}))
        await b.handle(tiered(Tier.review, tool="net.fetch"))
        await a.handle(tiered(Tier.review, tool="shell.exec"))  # a repeat: grouped, still one incident
        await asyncio.sleep(SETTLE_S)
        assert slack_api.requests == [], "a review finding must not page: no root, no escalation"
        first, second = await rows(a, Incident)
        assert (first.tier, first.count, first.escalate_at) == ("review", 2, None)
        assert await rows(a, Notification) == []

        clock.advance(seconds=incident_settings.review_digest_interval.total_seconds())  # past the next boundary
        await eventually(lambda: posts(slack_api), what="the review digest")
        await asyncio.sleep(SETTLE_S)  # both workers had every chance to send it again
        [digest_row] = await rows(a, ReviewDigest)
        [note] = await rows(a, Notification)
        clock.advance(hours=1)  # nothing new since: no further digest
        await asyncio.sleep(SETTLE_S)
        timelines = [await kinds(a, i.id) for i in (first, second)]
        verified = await Trail(a.engine).verify()
    [post] = posts(slack_api)
    assert post["channel"] == "C0FINOPS" and "thread_ts" not in post  # the billing workflow's responder
    blocks = json.dumps(post["blocks"])
    assert "2 incident(s) kept for review" in post["text"] and "3 finding(s)" in post["text"]
    for expected in ("unapproved_tool", "billing-agent", "billing-agent-1 (3)", "shell.exec (2)", "net.fetch (1)",
                     f"#{first.id}", f"#{second.id}", "warden incidents list --tier review --since"):
        assert expected in blocks, expected
    assert (note.kind, note.status, note.digest_id, note.incident_id) == ("digest", "delivered", digest_row.id, None)
    assert digest_row.responder == "finance-ops" and sorted(digest_row.summary["incidents"]) == [first.id, second.id]
    for timeline in timelines:
        assert timeline[:2] == ["opened", "kept_for_review"]
        assert timeline.count("review_digest") == 1 and timeline.count("notified") == 1
    assert verified.ok, verified.breaks
    assert metric_value(metrics.REVIEW_DIGESTS) - made_before == 1
    assert metric_value(metrics.FINDINGS_BY_TIER, tier="review") - review_before == 3


async def test_two_workers_at_one_boundary_make_one_digest_and_later_ones_wait_for_the_next(
    incident_settings: Settings
) -> None:
    a, b = IncidentResponder(incident_settings), IncidentResponder(incident_settings)
    await migrate(a.engine)
    interval = timedelta(hours=1)
    try:
        boundary = period_end(datetime.now().astimezone(), interval)
        before = boundary - timedelta(minutes=10)
        for tool in ("shell.exec", "net.fetch", "db.drop"):
            await a.store.incidents.record_finding(tiered(Tier.review, tool=tool), before)
        made = await asyncio.gather(make_digests(a.store, boundary, interval),
                                    make_digests(b.store, boundary + timedelta(seconds=1), interval))
        assert sorted(len(m) for m in made) == [0, 1], "one digest for the responder, made by one worker"
        [[(_, carried)]] = [m for m in made if m]
        assert carried == 3
        # Recorded before the boundary, after its digest was made: this period's digest exists, so it waits.
        late = await a.store.incidents.record_finding(tiered(Tier.review, tool="rm.rf"), before)
        assert late is Recorded.opened
        assert await make_digests(b.store, boundary + timedelta(minutes=5), interval) == []
        [(_, carried)] = await make_digests(a.store, boundary + interval, interval)
        assert carried == 1
        digests = await rows(a, ReviewDigest)
        notes = await rows(a, Notification)
    finally:
        await a.stop()
        await b.stop()
    assert [d.period_end for d in digests] == [boundary, boundary + interval]
    assert [(n.kind, n.digest_id) for n in notes] == [("digest", digests[0].id), ("digest", digests[1].id)]
    carried_ids = [i for d in digests for i in d.summary["incidents"]]
    assert sorted(carried_ids) == [1, 2, 3, 4], "each review incident in exactly one digest"


async def test_a_log_finding_is_recorded_and_tells_nobody(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    async with running(incident_settings, clock=clock) as responder:
        assert await responder.store.incidents.record_finding(tiered(Tier.log), clock()) is Recorded.opened
        await responder.handle(tiered(Tier.log))  # a repeat: counted and on the timeline, nothing else
        clock.advance(hours=2)
        await asyncio.sleep(SETTLE_S)
        [incident] = await rows(responder, Incident)
        timeline = await kinds(responder, incident.id)
        # A lifecycle move (CLI, API) is recorded; with nobody paged, nobody is told about it either.
        assert await responder.store.incidents.transition(incident.id, Status.open, Status.false_positive,
                                                          owner=OwnerRef(id="finance-ops"), by=Actor(BREAK_GLASS,
                                                                                                     "sam"),
                                                          note="noise", now=clock())
        await asyncio.sleep(SETTLE_S)
        notes = await rows(responder, Notification)
        digests = await rows(responder, ReviewDigest)
    assert slack_api.requests == []
    assert (incident.tier, incident.count, incident.escalate_at, incident.review_pending_since) == ("log", 2, None,
                                                                                                    None)
    assert timeline == ["opened", "logged", "grouped"]
    assert notes == [] and digests == []


async def test_a_page_finding_pages_as_before(incident_settings: Settings, slack_api: SlackApiServer) -> None:
    clock = FakeClock()
    async with running(incident_settings, clock=clock) as responder:
        await responder.handle(tiered(Tier.page))
        await eventually(slack_api.roots, what="the root message")
        [opened] = await rows(responder, Incident)

        async def notified() -> bool:  # recorded after the send: the clock moves only once it is on the timeline
            return "notified" in await kinds(responder, opened.id)

        await eventually(notified, what="the root's delivery recorded")
        clock.advance(hours=2)

        async def escalated() -> bool:
            return "escalated" in await kinds(responder, opened.id)

        await eventually(escalated, what="the chain called: unacknowledged for two hours")
        await asyncio.sleep(SETTLE_S)  # and a digest pass had every chance to post (it must not)
        [incident] = await rows(responder, Incident)
        timeline = await kinds(responder, incident.id)
    [root] = slack_api.roots("C0FINOPS")
    assert root.metadata is not None
    assert incident.tier == "page" and incident.review_pending_since is None
    assert timeline[:2] == ["opened", "notified"] and "kept_for_review" not in timeline
    assert "escalated" in timeline, "unacknowledged for two hours: the chain is called, as ever"
    assert [p for p in posts(slack_api) if "Review digest" in p["text"]] == []


async def test_a_page_finding_joining_a_review_incident_pages_it(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    raised_before = metric_value(metrics.TIER_RAISED, to="page")
    async with running(incident_settings, clock=clock) as responder:
        await responder.handle(tiered(Tier.review))
        await asyncio.sleep(SETTLE_S)
        assert slack_api.requests == []
        await responder.handle(tiered(Tier.page))
        [root] = await eventually(slack_api.roots, what="the root message once paged")
        [raised] = await rows(responder, Incident)

        async def notified() -> bool:  # recorded after the send: the clock moves only once it is on the timeline
            return "notified" in await kinds(responder, raised.id)

        await eventually(notified, what="the root's delivery recorded")
        clock.advance(hours=2)  # no longer waiting for a digest: the root told it all
        await asyncio.sleep(SETTLE_S)
        [incident] = await rows(responder, Incident)
        timeline = await kinds(responder, incident.id)
        digests = await rows(responder, ReviewDigest)
    assert (incident.tier, incident.count, incident.review_pending_since) == ("page", 2, None)
    assert incident.escalate_at is not None
    assert timeline[:5] == ["opened", "kept_for_review", "grouped", "tier_raised", "notified"]
    assert "2×" in json.dumps(root.blocks, ensure_ascii=False) and slack_api.roots("C0FINOPS") == [root]
    assert not [p for p in posts(slack_api) if "Review digest" in p["text"]]
    assert digests == []
    assert metric_value(metrics.TIER_RAISED, to="page") - raised_before == 1


async def test_a_lower_finding_joining_a_page_incident_is_an_ordinary_repeat(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    async with running(incident_settings) as responder:
        await responder.handle(tiered(Tier.page))
        [root] = await eventually(slack_api.roots, what="the root message")
        await responder.handle(tiered(Tier.log))
        await eventually(lambda: slack_api.replies(root), what="the repeat's thread reply")
        [incident] = await rows(responder, Incident)
    assert (incident.tier, incident.count) == ("page", 2), "an incident's tier never goes down"


HOSTILE_AGENT = "<!channel>-bot"
HOSTILE_TOOL = "<https://evil.example/login|the wiki> & <@U0EVIL>"


async def test_the_digest_escapes_hostile_agent_text(incident_settings: Settings, slack_api: SlackApiServer) -> None:
    clock = FakeClock()
    async with running(incident_settings, clock=clock) as responder:
        await responder.handle(tiered(Tier.review, agent=HOSTILE_AGENT, tool=HOSTILE_TOOL))
        clock.advance(hours=1)
        await eventually(lambda: posts(slack_api), what="the review digest")
    [post] = posts(slack_api)
    assert post["channel"] == "C0SECOPS"  # an agent no workflow lists: the default security owner
    sent = slack_api.bodies()
    for live in ("<!channel>", "<@U0EVIL>", "<https://evil", "|the wiki>"):
        assert live not in sent, f"{live} reached Slack unescaped"
    assert "&lt;!channel&gt;-bot" in sent and "&lt;@U0EVIL&gt;" in sent and "&amp;" in sent


async def test_the_digest_is_retried_after_slack_5xx(incident_settings: Settings, slack_api: SlackApiServer) -> None:
    clock = FakeClock()
    slack_api.fail("chat.postMessage", status=500, times=4)  # the first delivery's call and its 3 in-call retries
    async with running(incident_settings, clock=clock) as responder:
        await responder.handle(tiered(Tier.review))
        clock.advance(hours=1)
        [note] = await eventually(lambda: _settled(responder, clock), what="the digest delivered")
    assert (note.kind, note.status, note.attempts) == ("digest", "delivered", 2)
    assert len(slack_api.calls("chat.postMessage")) == 5 and len(slack_api.roots()) == 1


async def test_an_undeliverable_digest_is_dead_lettered_on_each_incidents_timeline(
    incident_settings: Settings, slack_api: SlackApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="warden.alert")
    dead_before = metric_value(metrics.NOTIFICATIONS_DEAD, notifier="slack", kind="digest")
    clock = FakeClock()
    slack_api.fail("chat.postMessage", error="fatal_error", times=1000)  # ok:false that a retry might fix
    async with running(incident_settings, clock=clock) as responder:
        await responder.handle(tiered(Tier.review))
        await responder.handle(tiered(Tier.review, tool="net.fetch"))
        clock.advance(hours=1)
        [note] = await eventually(lambda: _settled(responder, clock), what="the dead letter")
        timelines = [await kinds(responder, i.id) for i in await rows(responder, Incident)]
        verified = await Trail(responder.engine).verify()
    assert (note.status, note.attempts) == ("dead", incident_settings.notify_max_attempts)
    assert all(t.count("notification_dead_lettered") == 1 for t in timelines)
    assert metric_value(metrics.NOTIFICATIONS_DEAD, notifier="slack", kind="digest") - dead_before == 1
    [alert] = [r.getMessage() for r in caplog.records if "UNDELIVERED" in r.getMessage()]
    assert "review digest #" in alert and "REVIEW DIGEST" in alert and "2 incident(s)" in alert
    assert verified.ok


async def _settled(responder: IncidentResponder, clock: FakeClock) -> list[Notification] | None:
    """The notifications once none is pending; the clock moves on a second per look, so retries come due."""
    clock.advance(seconds=1)
    notes = await rows(responder, Notification)
    return notes if notes and all(n.status != "pending" for n in notes) else None


async def test_incidents_list_and_the_api_filter_by_tier(incident_settings: Settings, tmp_path: Path) -> None:
    tokens = "finance-ops:finance-token-0123456789"
    settings = incident_settings.model_copy(update={"api_tokens": SecretStr(tokens)})
    clock = FakeClock()
    async with running(settings, clock=clock) as responder, aiohttp.ClientSession() as http:
        for tier, tool in ((Tier.page, "shell.exec"), (Tier.review, "net.fetch"), (Tier.log, "db.drop")):
            await responder.store.incidents.record_finding(tiered(tier, tool=tool), clock())
        web = WebServer("127.0.0.1", 0, responder.route_installers())
        await web.start()
        try:
            base = f"http://127.0.0.1:{web.port}/incidents"
            auth = {"Authorization": "Bearer finance-token-0123456789"}
            async with http.get(f"{base}?tier=review", headers=auth) as r:
                listed = await r.json()
            async with http.get(f"{base}?tier=urgent", headers=auth) as r:
                refused = r.status
            async with http.get(f"{base}/3", headers=auth) as r:
                shown = await r.json()
        finally:
            await web.stop()
    assert [(i["target"], i["tier"]) for i in listed["items"]] == [("net.fetch", "review")] and listed["total"] == 1
    assert refused == 400 and shown["tier"] == "log"
    glass = ["--database-url", settings.effective_database_url]
    out = await asyncio.to_thread(CliRunner().invoke, main, ["incidents", "list", "--tier", "log", "--json", *glass])
    assert [i["target"] for i in json.loads(out.output)["items"]] == ["db.drop"]
    text = await asyncio.to_thread(CliRunner().invoke, main, ["incidents", "list", *glass])
    assert " review " in text.output and " log " in text.output and " page " in text.output
    shown_text = await asyncio.to_thread(CliRunner().invoke, main, ["incidents", "show", "2", *glass])
    assert "tier review" in shown_text.output and "kept_for_review" in shown_text.output


@pytest.mark.parametrize("value", ["soon", "0s", "-5"])
def test_a_bad_digest_interval_stops_start_up_naming_the_variable(value: str) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"WARDEN_REVIEW_DIGEST_INTERVAL": value})
    assert result.exit_code != 0
    [line] = [ln for ln in result.output.splitlines() if ln.strip()]
    assert "WARDEN_REVIEW_DIGEST_INTERVAL" in line


def test_the_digest_interval_reads_durations_and_seconds() -> None:
    assert Settings(review_digest_interval="15m").review_digest_interval == timedelta(minutes=15)
    assert Settings(review_digest_interval="900").review_digest_interval == timedelta(minutes=15)
    assert Settings().review_digest_interval == timedelta(hours=1)


async def test_the_migration_makes_every_earlier_incident_a_page_and_keeps_its_outbox(empty_incident_db: str) -> None:
    engine = make_engine(empty_incident_db)
    at = datetime(2026, 12, 1, 12, 0, 0)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0007")
            await insert_old_incident(conn, 3, at)
            await conn.execute(text(
                "INSERT INTO notifications (incident_id, kind, target, status, attempts, next_attempt_at, created_at, "
                "notifier) VALUES (3, 'root', '{}', 'pending', 0, :at, :at, 'slack')"), {"at": at})
        await migrate(engine)
        async with engine.connect() as conn:
            incident = (await conn.execute(text("SELECT tier, review_pending_since FROM incidents"))).one()
            note = (await conn.execute(text("SELECT incident_id, digest_id, status FROM notifications"))).one()
    finally:
        await engine.dispose()
    assert tuple(incident) == ("page", None)
    assert tuple(note) == (3, None, "pending")
