"""Incidents end to end on SQLite and PostgreSQL, through the real slack-sdk client and a local Slack Web API."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from pydantic import SecretStr, ValidationError
from sqlalchemy import select

from responders.db import MIGRATIONS, make_engine, migrate
from responders.db.models import Base, Incident, IncidentMessage, Notification
from responders.incident_responder import IncidentResponder
from responders.incidents import Status
from responders.notifiers.console.notifier import ConsoleNotifier
from responders.notifiers.registry import NOTIFIERS, notifier_names
from responders.outbox import stages
from responders.store.claims import Claims
from responders.store.common import utcnow
from responders.store.notices import AnyClaimed, Pending, Posted
from service.demo.slack_api_server import Message, SlackApiServer
from service.runtime.settings import Settings
from tests.conftest import SLACK_TOKEN
from tests.support.incident_helpers import FakeClock, eventually, finding, running
from tests.support.metrics import metric_value
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef
from warden.kit.retry import Backoff
from warden.telemetry import metrics


async def delivered(responder: IncidentResponder, n: int) -> bool:
    return (await responder.store.incidents.counts())["notifications"] >= n


async def notifications(responder: IncidentResponder) -> list[Notification]:
    async with responder.store.sessions() as s:
        return list((await s.execute(select(Notification).order_by(Notification.id))).scalars())


async def incidents(responder: IncidentResponder) -> list[Incident]:
    async with responder.store.sessions() as s:
        return list((await s.execute(select(Incident).order_by(Incident.id))).scalars())


async def messages(responder: IncidentResponder) -> list[IncidentMessage]:
    async with responder.store.sessions() as s:
        return list((await s.execute(select(IncidentMessage).order_by(IncidentMessage.id))).scalars())


def texts(message_blocks: list[dict[str, Any]]) -> str:
    return json.dumps(message_blocks, ensure_ascii=False)


async def test_the_root_message_goes_to_the_responder_the_matrix_names(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    async with running(incident_settings) as responder:
        await responder.handle(finding("billing-agent-1", "shell.exec"))
        await eventually(lambda: delivered(responder, 1), what="the root message")
        [root] = slack_api.roots()
        assert root.channel == "C0FINOPS"  # finance-ops, the billing workflow's named responder
        [note] = await notifications(responder)
        assert (note.status, note.notifier, note.address, note.ref) == (
            Pending.delivered.value, "slack", "C0FINOPS", root.ts)
        [incident] = await incidents(responder)
        [message] = await messages(responder)
        assert (message.incident_id, message.notifier, message.address, message.ref, message.dead) == (
            incident.id, "slack", "C0FINOPS", root.ts, False)
    blocks = texts(root.blocks or [])
    assert "billing-agent-1" in root.text and "HIGH" in root.text and "Finance Operations" in root.text
    for expected in ("unapproved_tool", "billing-agent-1", "billing-agent", "shell.exec", "<@U0SAM> (Sam Okafor)",
                     "Security Operations (<#C0SECOPS>)", "Finance Operations (<#C0FINOPS>)", "OWASP-ASI02",
                     "NIST-AI-RMF:MANAGE", "*Containment:* no playbook bound to this finding"):
        assert expected in blocks, expected
    actions = next(b for b in root.blocks or [] if b["type"] == "actions")["elements"]
    # No binding matches an unapproved tool in the bundled policy: no containment buttons.
    assert [a["text"]["text"] for a in actions] == ["Acknowledge", "False positive", "Silence 1 h"]
    assert root.metadata == {"event_type": "warden_incident",
                             "event_payload": {"incident_key": incident.key, "incident_id": incident.id}}
    [post] = slack_api.calls("chat.postMessage")
    assert post.headers["Authorization"] == f"Bearer {SLACK_TOKEN}"


async def test_an_unowned_agent_routes_to_the_default_security_owner(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    async with running(incident_settings) as responder:
        await responder.handle(finding("rogue-agent-7", "db.drop"))
        await eventually(lambda: delivered(responder, 1), what="the root message")
    [root] = slack_api.roots()
    assert root.channel == "C0SECOPS"
    assert "(unowned: default security owner)" in texts(root.blocks or [])


async def test_repeats_update_one_incident_in_its_thread_and_are_counted(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    grouped_before = metric_value(metrics.FINDINGS_GROUPED, rule="unapproved_tool")
    first = finding("support-bot-1", "shell.exec")
    async with running(incident_settings) as responder:
        await responder.handle(first)
        await eventually(lambda: delivered(responder, 1), what="the root message")
        for _ in range(9):  # while the outbox is sending: the last count must still reach Slack
            await responder.handle(finding("support-bot-1", "shell.exec", evidence={"cmd": "id"}))
        await responder.handle(first)  # the same finding again (a replayed event): idempotent
        [root] = await eventually(slack_api.roots, what="the root")
        await eventually(lambda: "10×" in texts(root.blocks or []), what="the root updated to count 10")
        [incident] = await incidents(responder)
    assert incident.count == 10
    assert [r.channel for r in slack_api.roots()] == ["C0AIPLAT"], "a repeat must never post a new root"
    replies = slack_api.replies(root)
    assert replies and all(r.thread_ts == root.ts for r in replies)
    assert "Seen again: 10 findings so far" in replies[-1].text and "cmd=id" in replies[-1].text
    assert len(replies) < 9, "a burst of repeats is coalesced into fewer thread replies"
    assert slack_api.calls("chat.update")
    assert metric_value(metrics.FINDINGS_GROUPED, rule="unapproved_tool") - grouped_before == 9


async def test_a_new_target_or_a_repeat_after_the_window_opens_a_new_incident(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    f1 = finding("support-bot-1", "shell.exec")
    later = f1.ts + timedelta(hours=2)  # support-assistant groups within 1h (the matrix default)
    async with running(incident_settings) as responder:
        await responder.handle(f1)
        await responder.handle(finding("support-bot-1", "net.fetch"))
        await responder.handle(finding("support-bot-1", "shell.exec", ts=later))
        await eventually(lambda: delivered(responder, 3), what="three root messages")
        rows = await incidents(responder)
        superseded = await responder.store.timeline.entries(rows[0].id)
    assert len(rows) == 3 and len(slack_api.roots("C0AIPLAT")) == 3
    assert rows[0].key == rows[2].key and rows[0].key != rows[1].key
    assert rows[0].open_key is None and rows[2].open_key == rows[2].key
    assert "superseded" in [e.kind for e in superseded]


async def test_the_group_window_runs_from_the_last_finding_not_the_first(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    first = finding("support-bot-1", "shell.exec")  # support-assistant groups within 1h (the matrix default)
    async with running(incident_settings) as responder:
        for minutes in (0, 50, 100, 150):  # each 50m after the one before, 150m after the first
            await responder.handle(finding("support-bot-1", "shell.exec", ts=first.ts + timedelta(minutes=minutes)))
        [incident] = await incidents(responder)
    assert incident.count == 4 and incident.open_key == incident.key
    assert (incident.first_seen, incident.last_seen) == (first.ts, first.ts + timedelta(minutes=150))


async def test_shadow_findings_are_recorded_but_never_notified(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    async with running(incident_settings) as responder:
        await responder.handle(finding("support-bot-1", "shell.exec", shadow=True))
        await responder.handle(finding("support-bot-1", "net.fetch"))  # a routed one, to know the outbox ran
        await eventually(lambda: delivered(responder, 1), what="the routed finding's root")
        rows = await incidents(responder)
    assert [r.target for r in rows] == ["net.fetch"]
    assert "shell.exec" not in slack_api.bodies()


ADVERSARIAL = {
    "arguments": "<!channel> ping <@U0EVIL> see <https://evil.example/login|the wiki> & token=hunter2hunter2",
    "<!here>": "key is xoxb-123456789012-abcdefghijkl",
}


async def test_untrusted_text_is_escaped_and_secrets_never_leave(
    incident_settings: Settings, slack_api: SlackApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agent = "<!everyone>-bot"  # an agent the matrix does not list: its id is untrusted too
    tool = "<https://evil.example|click>"
    async with running(incident_settings) as responder:
        await responder.handle(finding(agent, tool, evidence=dict(ADVERSARIAL)))
        await responder.handle(finding(agent, tool, evidence=dict(ADVERSARIAL)))  # and in the thread reply
        await eventually(lambda: delivered(responder, 2), what="root and repeat")
        [incident] = await incidents(responder)
        timeline = await responder.store.timeline.entries(incident.id)
    sent = slack_api.bodies()
    for live in ("<!channel>", "<!here>", "<!everyone>", "<@U0EVIL>", "<https://evil", "|the wiki>"):
        assert live not in sent, f"{live} reached Slack unescaped"
    assert "&lt;!channel&gt;" in sent and "&lt;@U0EVIL&gt;" in sent and "&lt;!everyone&gt;-bot" in sent
    assert "&amp;" in sent
    stored = json.dumps([incident.evidence, incident.agent_id, [e.detail for e in timeline]])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("hunter2hunter2", "xoxb-123456789012-abcdefghijkl", SLACK_TOKEN):
        assert secret not in sent and secret not in stored and secret not in logged, secret


@pytest.mark.parametrize("status", [429, 500])
async def test_rate_limits_and_server_errors_are_retried_and_delivered(
    incident_settings: Settings, slack_api: SlackApiServer, status: int
) -> None:
    slack_api.fail("chat.postMessage", status=status, retry_after=1 if status == 429 else None)
    async with running(incident_settings) as responder:
        await responder.handle(finding("billing-agent-1"))
        await eventually(lambda: delivered(responder, 1), what="delivery after the retry")
        [note] = await notifications(responder)
    assert len(slack_api.calls("chat.postMessage")) == 2
    assert len(slack_api.roots()) == 1 and note.attempts == 1  # retried inside one delivery, by slack-sdk


async def test_a_permanent_slack_error_is_dead_lettered_at_once_with_a_console_alert(
    incident_settings: Settings, slack_api: SlackApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="warden.alert")
    dead_before = metric_value(metrics.NOTIFICATIONS_DEAD, notifier="slack", kind="root")
    slack_api.fail("chat.postMessage", error="channel_not_found")
    async with running(incident_settings) as responder:
        await responder.handle(finding("billing-agent-1", "shell.exec"))
        await responder.handle(finding("billing-agent-1", "shell.exec"))  # its repeat must not wait forever
        notes = await eventually(lambda: _all_settled(responder), what="both notifications settled")
        [incident] = await incidents(responder)
        kinds = [e.kind for e in await responder.store.timeline.entries(incident.id)]
    assert [(n.kind, n.status, n.attempts) for n in notes] == [("root", "dead", 1), ("repeat", "dead", 1)]
    assert "channel_not_found" in (notes[0].last_error or "")
    assert kinds.count("notification_dead_lettered") == 2
    assert metric_value(metrics.NOTIFICATIONS_DEAD, notifier="slack", kind="root") - dead_before == 1
    [alert, _] = [r.getMessage() for r in caplog.records if "UNDELIVERED" in r.getMessage()]
    assert "ALERT [high]" in alert and "responder=finance-ops" in alert and "agent=billing-agent-1" in alert


async def _all_settled(responder: IncidentResponder) -> list[Notification] | None:
    notes = await notifications(responder)
    return notes if notes and all(n.status != Pending.pending.value for n in notes) else None


async def test_when_retries_are_used_up_the_notification_is_dead_lettered_not_lost(
    incident_settings: Settings, slack_api: SlackApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="warden.alert")
    slack_api.fail("chat.postMessage", error="fatal_error", times=1000)  # ok:false that a retry might fix
    async with running(incident_settings) as responder:
        await responder.handle(finding("support-bot-2", "shell.exec"))
        [note] = await eventually(lambda: _all_settled(responder), what="the dead letter")
    assert (note.status, note.attempts) == ("dead", incident_settings.notify_max_attempts)
    assert "fatal_error" in (note.last_error or "")
    assert len(slack_api.calls("chat.postMessage")) == incident_settings.notify_max_attempts
    [alert] = [r.getMessage() for r in caplog.records if "UNDELIVERED" in r.getMessage()]
    assert "responder=ai-platform" in alert and "agent=support-bot-2" in alert


async def test_a_lost_reply_is_not_posted_twice(incident_settings: Settings, slack_api: SlackApiServer) -> None:
    slack_api.fail("chat.postMessage", delay_s=2.5)  # Slack posts it, the reply comes after the 1 s timeout
    async with running(incident_settings) as responder:
        await responder.handle(finding("billing-agent-1"))
        await eventually(lambda: delivered(responder, 1), what="delivery")
        [note] = await notifications(responder)
    [root] = slack_api.roots()
    assert len(slack_api.calls("chat.postMessage")) == 1
    assert slack_api.calls("conversations.history"), "the retry must look for the root before posting"
    assert (note.ref, note.attempts) == (root.ts, 2)


async def test_a_crash_between_record_and_send_delivers_exactly_one_root_after_restart(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    crashed = IncidentResponder(incident_settings)
    await migrate(crashed.engine)
    await crashed.handle(finding("billing-agent-1"))  # recorded as pending; its outbox never ran
    await crashed.stop()
    assert slack_api.requests == []
    async with running(incident_settings) as restarted:
        await eventually(lambda: delivered(restarted, 1), what="delivery after the restart")
    assert len(slack_api.roots()) == 1 and len(slack_api.calls("chat.postMessage")) == 1


async def test_a_crash_during_send_does_not_post_a_second_root_after_restart(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    slack_api.fail("chat.postMessage", delay_s=2.0)  # Slack has posted it when the worker dies
    embedded = incident_settings.effective_database_url.startswith("sqlite")
    # SQLite has one worker, which frees its own leases at start; on PostgreSQL another worker waits them out: the
    # lease renewed for the send, derived from the call timeout (1 s + 2 calls × 7 × 0.5 s + 1 s = 9 s here).
    settings = incident_settings.model_copy(update={"outbox_lease_s": 3600.0 if embedded else 0.5,
                                                    "slack_timeout_s": 0.5})
    async with running(settings) as crashed:
        await crashed.handle(finding("billing-agent-1"))
        await eventually(slack_api.roots, what="the post to reach Slack")
    # The worker stopped mid-call: the notification is still pending, with one attempt on record.
    async with running(settings) as restarted:
        [note] = await eventually(lambda: _all_settled(restarted), what="delivery after the restart")
    [root] = slack_api.roots()
    assert len(slack_api.calls("chat.postMessage")) == 1
    assert (note.status, note.ref, note.attempts) == ("delivered", root.ts, 2)


async def test_an_unacknowledged_incident_escalates_after_the_step_timeout(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    escalations_before = metric_value(metrics.ESCALATIONS)
    async with running(incident_settings, clock) as responder:
        await responder.handle(finding("support-bot-1"))  # chain: ai-platform 15m, then secops 30m
        await eventually(lambda: delivered(responder, 1), what="the root")
        clock.advance(minutes=14)
        assert await responder.escalator.escalate_due() == 0
        clock.advance(minutes=2)
        await eventually(lambda: slack_api.roots("C0SECOPS"), what="the escalation to secops")
        await eventually(lambda: delivered(responder, 2), what="the escalation delivered")
        [incident] = await incidents(responder)
        clock.advance(minutes=31)  # the last step times out: nobody further to call
        await eventually(lambda: _timeline_has(responder, incident.id, "escalation_exhausted"), what="exhaustion")
        timeline = await responder.store.timeline.entries(incident.id)
    [root] = slack_api.roots("C0AIPLAT")
    [escalated] = slack_api.roots("C0SECOPS")
    assert "Escalated to Security Operations" in texts(escalated.blocks or [])
    assert any("Escalated to" in r.text and "not acknowledged within 15m of step 1" in r.text
               for r in slack_api.replies(root))
    [entry] = [e for e in timeline if e.kind == "escalated"]
    assert entry.detail["to"] == "secops" and entry.detail["step"] == 1
    assert incident.escalation_step == 1
    assert metric_value(metrics.ESCALATIONS) - escalations_before == 1
    assert len(slack_api.roots()) == 2


async def test_each_escalation_deadline_counts_from_the_start_of_its_own_step(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    opened = clock()
    async with running(incident_settings, clock) as responder:
        await responder.handle(finding("billing-agent-1"))  # finance-ops 10m → secops 20m → ciso 30m
        [incident] = await incidents(responder)
        assert incident.escalate_at == opened + timedelta(minutes=10)
        clock.advance(minutes=13)  # escalated 3 minutes late: step 1 starts now, not at its deadline
        await responder.escalator.escalate_due()
        [incident] = await incidents(responder)
        assert incident.escalation_step == 1
        assert incident.escalate_at == opened + timedelta(minutes=13 + 20), "20m from the start of step 1"
        clock.advance(minutes=18)  # 31m after opening: past opened + 20m, 2m short of step 1's deadline
        await responder.escalator.escalate_due()
        [incident] = await incidents(responder)
        assert incident.escalation_step == 1, "step 1 has run only 18 of its 20 minutes"
        clock.advance(minutes=2)
        await responder.escalator.escalate_due()
        [incident] = await incidents(responder)
    assert incident.escalation_step == 2
    assert incident.escalate_at == opened + timedelta(minutes=33 + 30)


async def _timeline_has(responder: IncidentResponder, incident_id: int, kind: str) -> bool:
    return any(e.kind == kind for e in await responder.store.timeline.entries(incident_id))


async def test_escalation_timers_survive_a_restart_and_stop_on_acknowledgement(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    async with running(incident_settings, clock) as first:
        await first.handle(finding("billing-agent-1"))  # finance-ops 10m → secops 20m → ciso 30m
        await first.handle(finding("support-bot-1"))
        await eventually(lambda: delivered(first, 2), what="both roots")
        billing, support = await incidents(first)
        ai_platform = OwnerRef.model_validate(support.owners["responder"])
        assert await first.store.incidents.transition(support.id, Status.open, Status.acknowledged, owner=ai_platform,
                                                      by=Actor("slack", "U0KAI"), note="Acknowledged", now=clock())
    clock.advance(minutes=11)  # the deadline passed while no worker ran
    async with running(incident_settings, clock) as restarted:
        await eventually(lambda: slack_api.roots("C0SECOPS"), what="escalation by the restarted worker")

        async def settled_as_time_passes() -> list[Notification] | None:
            # A Slack call slower than the test's 1 s timeout (a loaded machine) is retried after a backoff in the
            # worker's clock: this one moves only when the test moves it (0.2 s a look, far from the next step).
            clock.advance(seconds=0.2)
            return await _all_settled(restarted)

        await eventually(settled_as_time_passes, what="outbox drained")
        billing, support = await incidents(restarted)
    assert billing.escalation_step == 1 and support.escalation_step == 0
    assert [m.channel for m in slack_api.roots()] == ["C0FINOPS", "C0AIPLAT", "C0SECOPS"]


async def test_a_chain_that_starts_with_someone_else_calls_them_at_once(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    async with running(incident_settings) as responder:
        await responder.handle(finding("compliance-agent-1"))  # no chain of its own: the default (secops first)
        await eventually(lambda: delivered(responder, 2), what="root and first step")
    assert [m.channel for m in slack_api.roots()] == ["C0COMPLY", "C0SECOPS"]


async def test_without_slack_the_console_notifier_delivers(
    incident_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="warden.alert")
    settings = Settings(database_url=incident_db, data_dir=tmp_path, outbox_poll_s=0.05)
    async with running(settings) as responder:
        assert [n.name for n in responder.notifiers] == ["console"] and responder.route_installers() == []
        await responder.handle(finding("research-rag-1", "shell.exec"))
        await eventually(lambda: delivered(responder, 1), what="the console alert")
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert "responder=data-gov (Data Governance)" in line and "workflow=research-rag" in line
    assert "rule=unapproved_tool" in line and "agent=research-rag-1" in line and "tool='shell.exec'" in line


async def test_the_migrations_build_exactly_the_models(empty_incident_db: str) -> None:
    responder = IncidentResponder(Settings(database_url=empty_incident_db))
    try:
        await migrate(responder.engine)
        await migrate(responder.engine)  # idempotent: a second worker start finds the schema current
        async with responder.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    finally:
        await responder.stop()
    assert diff == []


# -- fenced claims: what a worker that lost its claim may still do (nothing) -----------------------------------------


@asynccontextmanager
async def two_workers(settings: Settings) -> AsyncIterator[tuple[IncidentResponder, IncidentResponder]]:
    """Two responders on one database, their loops not started: the test decides who claims and sends when."""
    a, b = IncidentResponder(settings), IncidentResponder(settings)
    await migrate(a.engine)
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def test_a_claim_taken_over_after_its_lease_records_nothing(incident_settings: Settings) -> None:
    async with two_workers(incident_settings) as (a, b):
        await a.store.incidents.record_finding(finding("billing-agent-1"), utcnow())
        t0, lease = utcnow(), timedelta(seconds=60)
        [mine] = await a.store.outbox.claim_due(t0, lease)
        assert await b.store.outbox.claim_due(t0 + timedelta(seconds=30), lease) == [], "leased: b cannot claim it"
        [theirs] = await b.store.outbox.claim_due(t0 + timedelta(seconds=61), lease)  # a was paused past its lease
        assert (mine.attempts, theirs.attempts) == (1, 2) and mine.claim != theirs.claim
        late = Posted("C0FINOPS", "1700000000.000002")
        assert not await a.store.claims.renew(mine, t0 + timedelta(hours=1))
        assert not await a.store.claims.mark_delivered(mine, late, t0)
        assert not await a.store.claims.retry_later(mine, "TimeoutError", t0)
        assert not await a.store.claims.dead_letter(mine, "gave up", t0)
        assert not await a.store.claims.give_back(mine, "lease ended")
        [row] = await notifications(a)
        assert (row.status, row.claim, row.attempts, row.ref, row.last_error) == (
            "pending", theirs.claim, 2, None, None), "a wrote nothing to the row b holds"
        assert await messages(a) == [], "nor a root reference"
        first = Posted("C0FINOPS", "1700000000.000001")
        assert await b.store.claims.renew(theirs, t0 + timedelta(hours=1))
        assert await b.store.claims.mark_delivered(theirs, first, t0)
        assert not await a.store.claims.mark_delivered(mine, late, t0), "still nothing once b has recorded"
        [row] = await notifications(a)
        [root] = await messages(a)
        [incident] = await incidents(a)
        notified = [e for e in await a.store.timeline.entries(incident.id) if e.kind == "notified"]
    assert (row.status, row.ref) == ("delivered", first.ref)
    assert (root.address, root.ref) == (first.address, first.ref), "the stored root is b's, never overwritten"
    assert len(notified) == 1


async def test_a_worker_resuming_after_a_takeover_does_not_send(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    lost_before = metric_value(metrics.OUTBOX_CLAIMS_LOST, notifier="slack", when="before_send")
    async with two_workers(incident_settings) as (a, b):
        t0 = utcnow()
        await a.store.incidents.record_finding(finding("billing-agent-1"), t0 - timedelta(seconds=180))
        [paused] = await a.store.outbox.claim_due(t0 - timedelta(seconds=120),
                                                  timedelta(seconds=60))  # ran out at t0 - 60s
        [taken] = await b.store.outbox.claim_due(t0, timedelta(seconds=60))
        await b.outbox.pipelines["slack"].deliver(taken)
        assert len(slack_api.roots()) == 1 and slack_api.calls("conversations.history"), "b looked, then posted"
        requests = len(slack_api.requests)
        await a.outbox.pipelines["slack"].deliver(paused)  # a resumes: its renewal is refused, nothing is sent
        assert len(slack_api.requests) == requests
        [row] = await notifications(a)
        [root] = await messages(a)
    [posted] = slack_api.roots()
    assert (row.status, row.ref, root.ref) == ("delivered", posted.ts, posted.ts)
    assert metric_value(metrics.OUTBOX_CLAIMS_LOST, notifier="slack", when="before_send") - lost_before == 1


async def test_a_batch_longer_than_the_lease_keeps_its_waiting_rows_from_the_other_worker(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    """Four roots that take 0.3 s each, on a 0.5 s queue lease: b claims none of them while a's batch runs, and each
    is delivered once (before, b took a's tail, and a b's, all along: rows lost their claims, spent their attempts
    and, under load, never settled). The four go to four channels, so they are sent in four lanes at once and none
    waits: this no longer reaches the hold of the rows waiting in a lane. The Slack client waits up to 10 s, not the
    fixture's 1 s: a loaded CI machine once kept this process from reading the 0.3 s replies within 1 s, and the
    failed sends were released for retry, which is another test's case."""
    slack_api.fail(None, times=10**6, delay_s=0.3)
    agents = ["billing-agent-1", "research-rag-1", "support-bot-1", "shadow-it-agent-9"]
    async with two_workers(incident_settings.model_copy(update={"slack_timeout_s": 10.0})) as (a, b):
        for agent in agents:
            await a.store.incidents.record_finding(finding(agent), utcnow())
        batch = asyncio.create_task(a.outbox.deliver_due())
        taken_by_b: list[object] = []
        while not batch.done():
            await asyncio.sleep(0.1)
            taken_by_b += await b.store.outbox.claim_due(utcnow(), timedelta(seconds=60))
        assert await batch == len(agents)
        rows = await notifications(a)
    assert taken_by_b == []
    assert [(r.status, r.attempts) for r in rows] == [("delivered", 1)] * len(agents)
    assert len(slack_api.roots()) == len(agents)


class SlowRenewals(Claims):
    """A store whose lease renewals take `delay_s`, as when the worker is paused while renewing."""

    delay_s = 0.0

    async def renew(self, claimed: AnyClaimed, until: datetime) -> bool:
        renewed = await super().renew(claimed, until)
        await asyncio.sleep(self.delay_s)
        return renewed


async def test_a_send_is_called_off_when_the_renewal_came_back_too_late(
    incident_settings: Settings, slack_api: SlackApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages, "RENEWAL_GRACE_S", 0.05)
    async with two_workers(incident_settings) as (a, _):
        await a.store.incidents.record_finding(finding("billing-agent-1"), utcnow())
        claims = SlowRenewals(a.engine, a.store.timeline)
        claims.delay_s = 0.2  # the local deadline passes while the renewal is on its way back: do not send
        slow = replace(a.store, claims=claims)
        [claimed] = await slow.outbox.claim_due(utcnow(), timedelta(seconds=60))
        await stages.Pipeline(a.notifiers[0], slow, retry=stages.Retry(Backoff(1.0), 3), clock=utcnow,
                              fallback=ConsoleNotifier()).deliver(claimed)
        [row] = await notifications(a)
    assert slack_api.requests == []
    assert (row.status, row.claim, row.claimed_until) == ("pending", None, None), "given back, due at once"
    assert "lease ended" in (row.last_error or "")


async def test_a_rate_limit_longer_than_a_call_is_waited_out_by_the_outbox(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    slack_api.fail("chat.postMessage", status=429, retry_after=30)
    async with running(incident_settings) as responder:
        await responder.handle(finding("billing-agent-1"))
        [row] = await eventually(lambda: _failed_once(responder), what="the first attempt rate limited")
    assert "rate limited for 30s" in (row.last_error or "")
    assert row.next_attempt_at - row.created_at >= timedelta(seconds=30), "not the 0.05 s backoff: Retry-After"
    assert len(slack_api.calls("chat.postMessage")) == 1


async def _failed_once(responder: IncidentResponder) -> list[Notification] | None:
    notes = await notifications(responder)
    return notes if notes and notes[0].last_error else None


# -- several notifiers ----------------------------------------------------------------------------------------------


def alert_lines(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "warden.alert" and r.getMessage().startswith(prefix)]


async def test_each_notifier_posts_one_root_per_incident_and_threads_its_own_replies(
    incident_settings: Settings, slack_api: SlackApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="warden.alert")
    settings = incident_settings.model_copy(update={"notifiers": "slack,console"})
    async with running(settings) as responder:
        assert [n.name for n in responder.notifiers] == ["slack", "console"]
        await responder.handle(finding("billing-agent-1", "shell.exec"))
        await responder.handle(finding("support-bot-1", "shell.exec"))
        await eventually(lambda: delivered(responder, 4), what="two roots on each notifier")
        await responder.handle(finding("billing-agent-1", "shell.exec", evidence={"cmd": "id"}))
        await responder.handle(finding("support-bot-1", "shell.exec", evidence={"cmd": "id"}))
        notes = await eventually(lambda: _all_settled(responder), what="the repeats on each notifier")
        billing, support = await incidents(responder)
        refs = {(m.incident_id, m.notifier): (m.address, m.ref, m.dead) for m in await messages(responder)}
        via = [(e.detail["via"], e.detail["kind"]) for e in await responder.store.timeline.entries(billing.id)
               if e.kind == "notified"]
    finance, platform = slack_api.roots("C0FINOPS"), slack_api.roots("C0AIPLAT")
    assert len(slack_api.roots()) == 2 and len(finance) == 1 and len(platform) == 1
    for root in (finance[0], platform[0]):
        [reply] = slack_api.replies(root)
        assert reply.thread_ts == root.ts and "Seen again: 2 findings so far" in reply.text
    assert [line.split("] ")[1].split(" rule=")[0] for line in alert_lines(caplog, "ALERT")] == [
        f"incident=#{billing.id}", f"incident=#{support.id}"]
    assert len(alert_lines(caplog, f"INCIDENT #{billing.id} seen again: count=2")) == 1
    assert len(alert_lines(caplog, f"INCIDENT #{support.id} seen again: count=2")) == 1
    rows = sorted((n.incident_id, n.notifier, n.kind, n.status, n.ref) for n in notes)
    assert rows == sorted([
        (billing.id, "slack", "root", "delivered", finance[0].ts),
        (billing.id, "slack", "repeat", "delivered", slack_api.replies(finance[0])[0].ts),
        (billing.id, "console", "root", "delivered", f"incident-{billing.id}"),
        (billing.id, "console", "repeat", "delivered", f"incident-{billing.id}"),
        (support.id, "slack", "root", "delivered", platform[0].ts),
        (support.id, "slack", "repeat", "delivered", slack_api.replies(platform[0])[0].ts),
        (support.id, "console", "root", "delivered", f"incident-{support.id}"),
        (support.id, "console", "repeat", "delivered", f"incident-{support.id}"),
    ])
    assert refs == {
        (billing.id, "slack"): ("C0FINOPS", finance[0].ts, False),
        (billing.id, "console"): ("console", f"incident-{billing.id}", False),
        (support.id, "slack"): ("C0AIPLAT", platform[0].ts, False),
        (support.id, "console"): ("console", f"incident-{support.id}", False),
    }
    assert sorted(via) == [("console", "repeat"), ("console", "root"), ("slack", "repeat"), ("slack", "root")]


async def test_a_notifier_that_dead_letters_does_not_hold_up_the_other(
    incident_settings: Settings, slack_api: SlackApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="warden.alert")
    dead_before = metric_value(metrics.NOTIFICATIONS_DEAD, notifier="slack", kind="root")
    console_before = metric_value(metrics.NOTIFICATIONS_DELIVERED, notifier="console", kind="repeat")
    slack_api.fail("chat.postMessage", error="channel_not_found", times=1000)
    settings = incident_settings.model_copy(update={"notifiers": "slack,console"})
    async with running(settings) as responder:
        await responder.handle(finding("billing-agent-1", "shell.exec"))
        await responder.handle(finding("billing-agent-1", "shell.exec"))
        notes = await eventually(lambda: _all_settled(responder), what="every notification settled")
        [incident] = await incidents(responder)
        refs = {m.notifier: (m.address, m.ref, m.dead) for m in await messages(responder)}
    settled = sorted((n.notifier, n.kind, n.status) for n in notes)
    assert settled == [("console", "repeat", "delivered"), ("console", "root", "delivered"),
                       ("slack", "repeat", "dead"), ("slack", "root", "dead")]
    assert refs == {"slack": (None, None, True), "console": ("console", f"incident-{incident.id}", False)}
    assert slack_api.roots() == []
    assert len(alert_lines(caplog, "ALERT")) == 1 and len(alert_lines(caplog, f"INCIDENT #{incident.id} seen")) == 1
    undelivered = [r.getMessage() for r in caplog.records if "UNDELIVERED" in r.getMessage()]
    assert len(undelivered) == 2 and all("channel_not_found" in u or "dead-lettered" in u for u in undelivered)
    assert metric_value(metrics.NOTIFICATIONS_DEAD, notifier="slack", kind="root") - dead_before == 1
    assert metric_value(metrics.NOTIFICATIONS_DELIVERED, notifier="console", kind="repeat") - console_before == 1


async def test_a_notifier_still_retrying_does_not_delay_the_other(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    slack_api.fail("chat.postMessage", error="fatal_error", times=1000)  # retriable: Slack waits for its backoff
    settings = incident_settings.model_copy(update={"notifiers": "slack,console", "notify_retry_backoff_s": 3600.0})
    async with running(settings) as responder:
        await responder.handle(finding("billing-agent-1", "shell.exec"))
        await eventually(lambda: delivered(responder, 1), what="the console root")
        await responder.handle(finding("billing-agent-1", "shell.exec"))
        await eventually(lambda: delivered(responder, 2), what="the console repeat")
        notes = await notifications(responder)
    states = sorted((n.notifier, n.kind, n.status, n.attempts) for n in notes)
    assert states == [("console", "repeat", "delivered", 1), ("console", "root", "delivered", 1),
                      ("slack", "repeat", "pending", 0), ("slack", "root", "pending", 1)]
    [slack_root] = [n for n in notes if n.notifier == "slack" and n.kind == "root"]
    assert slack_root.next_attempt_at - slack_root.created_at >= timedelta(seconds=3600)  # Backoff.delay(1)


async def test_a_notifier_added_later_gets_its_own_root_before_its_follow_ups(
    incident_settings: Settings, slack_api: SlackApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="warden.alert")
    async with running(incident_settings.model_copy(update={"notifiers": "console"})) as console_only:
        await console_only.handle(finding("billing-agent-1", "shell.exec"))
        await eventually(lambda: delivered(console_only, 1), what="the console root")
    assert slack_api.requests == []
    async with running(incident_settings.model_copy(update={"notifiers": "slack,console"})) as both:
        await both.handle(finding("billing-agent-1", "shell.exec"))  # a repeat, after Slack was added
        notes = await eventually(lambda: _all_settled(both), what="the repeat on both notifiers")
    assert sorted((n.notifier, n.kind) for n in notes) == [
        ("console", "repeat"), ("console", "root"), ("slack", "repeat"), ("slack", "root")]
    [root] = slack_api.roots("C0FINOPS")
    [reply] = slack_api.replies(root)
    assert "Seen again: 2 findings so far" in reply.text
    assert len(alert_lines(caplog, "ALERT")) == 1, "the console root is not posted again"


def test_the_notifiers_setting_names_what_cannot_work() -> None:
    assert Settings(notifiers=" slack , console,slack", slack_token=SLACK_TOKEN).notifiers == "slack,console"
    assert Settings(notifiers=None).notifiers is None
    known = ", ".join(sorted(NOTIFIERS))  # every registered notifier, whatever packages this build has
    assert {"console", "slack"} <= set(NOTIFIERS)
    unknown = rf"unknown notifier 'pager' in WARDEN_NOTIFIERS \(known: {re.escape(known)}\)"
    with pytest.raises(ValidationError, match=unknown):
        Settings(notifiers="console,pager")
    with pytest.raises(ValidationError, match="WARDEN_NOTIFIERS names slack, which needs WARDEN_SLACK_TOKEN"):
        Settings(notifiers="slack")
    token = {"slack_token": SecretStr(SLACK_TOKEN)}
    assert notifier_names(None, token) == ["slack"]  # the default keeps the behaviour before the setting
    assert notifier_names("", {}) == ["console"]
    with pytest.raises(ValueError, match="WARDEN_NOTIFIERS"):
        notifier_names("email", token)


# -- the migration to per-notifier messages -------------------------------------------------------------------------

_V1_INCIDENTS = sa.table(
    "incidents", *(sa.column(c) for c in (
        "id", "key", "open_key", "status", "rule", "severity", "title", "agent_id", "workflow", "target",
        "policy_sha256", "count", "first_seen", "last_seen", "opened_at", "updated_at", "escalation_step",
        "slack_channel", "slack_ts", "root_dead")),
    *(sa.column(c, sa.JSON()) for c in ("frameworks", "tags", "evidence", "owners")),
)
_V1_NOTIFICATIONS = sa.table(
    "notifications", *(sa.column(c) for c in (
        "id", "incident_id", "kind", "note", "status", "attempts", "next_attempt_at", "notifier", "channel", "ts",
        "created_at", "delivered_at")), sa.column("target", sa.JSON()),
)


def _to_revision(revision: str) -> Callable[[sa.Connection], None]:
    def run(connection: sa.Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    return run


async def test_the_migration_moves_root_references_per_notifier_and_delivery_carries_on(
    empty_incident_db: str, slack_api: SlackApiServer, tmp_path: Path
) -> None:
    engine = make_engine(empty_incident_db)
    f = finding("billing-agent-1", "shell.exec")
    then = datetime(2026, 11, 20, 9, 0)  # naive UTC, as stored
    owners = f.owners.model_dump(mode="json")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to_revision("0001"))
        async with engine.begin() as conn:
            common: dict[str, Any]
            common = {"status": "open", "rule": f.rule, "severity": "high", "title": f.title, "workflow": f.workflow,
                      "target": f.target, "policy_sha256": f.policy_sha256, "count": 1, "first_seen": then,
                      "last_seen": then, "opened_at": then, "updated_at": then, "escalation_step": 0,
                      "frameworks": [], "tags": [], "evidence": {"tool": "shell.exec"}, "owners": owners}
            for n, (channel, ts, dead) in enumerate([("C0FINOPS", "1700000000.000001", False), (None, None, True),
                                                     (None, None, False)], start=1):
                await conn.execute(sa.insert(_V1_INCIDENTS).values(
                    **common, key=f"k{n}", open_key=f"k{n}", agent_id=f"billing-agent-{n}", slack_channel=channel,
                    slack_ts=ts, root_dead=dead))
            note = {"target": owners["responder"], "note": None, "next_attempt_at": then, "created_at": then,
                    "channel": None, "ts": None, "delivered_at": None}
            await conn.execute(sa.insert(_V1_NOTIFICATIONS), [
                {**note, "incident_id": 1, "kind": "root", "status": "delivered", "attempts": 1,
                 "notifier": "slack", "channel": "C0FINOPS", "ts": "1700000000.000001", "delivered_at": then},
                {**note, "incident_id": 2, "kind": "root", "status": "dead", "attempts": 3,
                 "notifier": "slack"},
                {**note, "incident_id": 1, "kind": "repeat", "status": "pending", "attempts": 0,
                 "notifier": None},  # recorded before the upgrade: the root's notifier (slack) takes it
            ])
        await migrate(engine)
        async with engine.connect() as conn:
            copied = (await conn.execute(sa.text(
                "SELECT incident_id, notifier, address, ref, dead FROM incident_messages ORDER BY incident_id"
            ))).all()
            carried = (await conn.execute(sa.text(
                "SELECT id, notifier, address, ref FROM notifications ORDER BY id"))).all()
            columns = await conn.run_sync(lambda sync: [c["name"] for c in sa.inspect(sync).get_columns("incidents")])
    finally:
        await engine.dispose()
    assert [tuple(r) for r in copied] == [(1, "slack", "C0FINOPS", "1700000000.000001", False),
                                         (2, "slack", None, None, True)]
    assert [tuple(r) for r in carried] == [(1, "slack", "C0FINOPS", "1700000000.000001"), (2, "slack", None, None),
                                          (3, "slack", None, None)]
    assert not {"slack_channel", "slack_ts", "root_dead"} & set(columns)

    # A worker on the migrated database threads the pending repeat under the copied root; nothing is posted twice.
    slack_api.messages.append(Message(channel="C0FINOPS", ts="1700000000.000001", text="the root, before 0002"))
    settings = Settings(database_url=empty_incident_db, data_dir=tmp_path / "data", slack_token=SLACK_TOKEN,
                        slack_api_url=slack_api.base_url, outbox_poll_s=0.05, notify_retry_backoff_s=0.05)
    async with running(settings) as responder:
        notes = await eventually(lambda: _all_settled(responder), what="the carried-over notifications")
    assert sorted((n.incident_id, n.kind, n.notifier, n.status) for n in notes) == [
        (1, "repeat", "slack", "delivered"), (1, "root", "slack", "delivered"),
        (2, "root", "slack", "dead")]
    [old_root] = slack_api.roots("C0FINOPS")
    assert old_root.ts == "1700000000.000001" and old_root.updates == 1, "the copied root is the one refreshed"
    assert [r.thread_ts for r in slack_api.replies(old_root)] == ["1700000000.000001"]
    assert len(slack_api.roots()) == 1  # the copied root only
