"""Incidents end to end on SQLite and PostgreSQL, through the real slack-sdk client and a local Slack Web API."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from responders.db import migrate
from responders.db.models import Base, Incident, Notification
from responders.incident_responder import IncidentResponder
from responders.incidents import Status
from responders.store import Pending
from tests.conftest import SLACK_TOKEN
from tests.incident_helpers import FakeClock, eventually, finding, running
from tests.slack_api_server import SlackApiServer
from warden.contract import metrics
from warden.contract.findings import OwnerRef
from warden.runtime.settings import Settings


async def delivered(responder: IncidentResponder, n: int) -> bool:
    return (await responder.store.counts())["notifications"] >= n


async def notifications(responder: IncidentResponder) -> list[Notification]:
    async with responder.store.sessions() as s:
        return list((await s.execute(select(Notification).order_by(Notification.id))).scalars())


async def incidents(responder: IncidentResponder) -> list[Incident]:
    async with responder.store.sessions() as s:
        return list((await s.execute(select(Incident).order_by(Incident.id))).scalars())


def texts(message_blocks: list[dict]) -> str:
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
        assert (note.status, note.channel, note.ts) == (Pending.delivered.value, "C0FINOPS", root.ts)
        [incident] = await incidents(responder)
        assert incident.slack_ts == root.ts
    blocks = texts(root.blocks or [])
    assert "billing-agent-1" in root.text and "HIGH" in root.text and "Finance Operations" in root.text
    for expected in ("unapproved_tool", "billing-agent-1", "billing-agent", "shell.exec", "<@U0SAM> (Sam Okafor)",
                     "Security Operations (<#C0SECOPS>)", "Finance Operations (<#C0FINOPS>)", "OWASP-ASI02",
                     "NIST-AI-RMF:MANAGE", "Playbook:", "awaiting a decision by the approver, Sam Okafor"):
        assert expected in blocks, expected
    actions = next(b for b in root.blocks or [] if b["type"] == "actions")["elements"]
    assert [a["text"]["text"] for a in actions] == [
        "Acknowledge", "Approve containment", "Deny containment", "False positive"]
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
    grouped_before = metrics.FINDINGS_GROUPED.labels(rule="unapproved_tool")._value.get()
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
    assert metrics.FINDINGS_GROUPED.labels(rule="unapproved_tool")._value.get() - grouped_before == 9


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
        superseded = await responder.store.timeline(rows[0].id)
    assert len(rows) == 3 and len(slack_api.roots("C0AIPLAT")) == 3
    assert rows[0].key == rows[2].key and rows[0].key != rows[1].key
    assert rows[0].open_key is None and rows[2].open_key == rows[2].key
    assert "superseded" in [e.kind for e in superseded]


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
        timeline = await responder.store.timeline(incident.id)
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
    dead_before = metrics.NOTIFICATIONS_DEAD.labels(notifier="slack", kind="root")._value.get()
    slack_api.fail("chat.postMessage", error="channel_not_found")
    async with running(incident_settings) as responder:
        await responder.handle(finding("billing-agent-1", "shell.exec"))
        await responder.handle(finding("billing-agent-1", "shell.exec"))  # its repeat must not wait forever
        notes = await eventually(lambda: _all_settled(responder), what="both notifications settled")
        [incident] = await incidents(responder)
        kinds = [e.kind for e in await responder.store.timeline(incident.id)]
    assert [(n.kind, n.status, n.attempts) for n in notes] == [("root", "dead", 1), ("repeat", "dead", 1)]
    assert "channel_not_found" in (notes[0].last_error or "")
    assert kinds.count("notification_dead_lettered") == 2
    assert metrics.NOTIFICATIONS_DEAD.labels(notifier="slack", kind="root")._value.get() - dead_before == 1
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
    assert (note.ts, note.attempts) == (root.ts, 2)


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
    # SQLite has one worker, which frees its own leases at start; on PostgreSQL another worker waits them out.
    settings = incident_settings.model_copy(update={"outbox_lease_s": 3600.0 if embedded else 0.5})
    async with running(settings) as crashed:
        await crashed.handle(finding("billing-agent-1"))
        await eventually(slack_api.roots, what="the post to reach Slack")
    # The worker stopped mid-call: the notification is still pending, with one attempt on record.
    async with running(settings) as restarted:
        [note] = await eventually(lambda: _all_settled(restarted), what="delivery after the restart")
    [root] = slack_api.roots()
    assert len(slack_api.calls("chat.postMessage")) == 1
    assert (note.status, note.ts, note.attempts) == ("delivered", root.ts, 2)


async def test_an_unacknowledged_incident_escalates_after_the_step_timeout(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    escalations_before = metrics.ESCALATIONS._value.get()
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
        timeline = await responder.store.timeline(incident.id)
    [root] = slack_api.roots("C0AIPLAT")
    [escalated] = slack_api.roots("C0SECOPS")
    assert "Escalated to Security Operations" in texts(escalated.blocks or [])
    assert any("Escalated to" in r.text and "not acknowledged within 15m of step 1" in r.text
               for r in slack_api.replies(root))
    [entry] = [e for e in timeline if e.kind == "escalated"]
    assert entry.detail["to"] == "secops" and entry.detail["step"] == 1
    assert incident.escalation_step == 1
    assert metrics.ESCALATIONS._value.get() - escalations_before == 1
    assert len(slack_api.roots()) == 2


async def _timeline_has(responder: IncidentResponder, incident_id: int, kind: str) -> bool:
    return any(e.kind == kind for e in await responder.store.timeline(incident_id))


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
        assert await first.store.transition(support.id, Status.open, Status.acknowledged, owner=ai_platform,
                                            slack_user="U0KAI", note="Acknowledged", now=clock())
    clock.advance(minutes=11)  # the deadline passed while no worker ran
    async with running(incident_settings, clock) as restarted:
        await eventually(lambda: slack_api.roots("C0SECOPS"), what="escalation by the restarted worker")
        await eventually(lambda: _all_settled(restarted), what="outbox drained")
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
        assert responder.notifier.name == "console" and responder.route_installers() == []
        await responder.handle(finding("research-rag-1", "shell.exec"))
        await eventually(lambda: delivered(responder, 1), what="the console alert")
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert "responder=data-gov (Data Governance)" in line and "workflow=research-rag" in line
    assert "rule=unapproved_tool" in line and "agent=research-rag-1" in line and "tool='shell.exec'" in line


async def test_the_migrations_build_exactly_the_models(incident_db: str) -> None:
    responder = IncidentResponder(Settings(database_url=incident_db))
    try:
        await migrate(responder.engine)
        await migrate(responder.engine)  # idempotent: a second worker start finds the schema current
        async with responder.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    finally:
        await responder.stop()
    assert diff == []
