"""Hot reload on a running worker: a policy edit goes live between messages with no restart and no lost event;
an invalid edit keeps the old policy live and raises a critical self-alert."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from service.runtime.settings import BUNDLED_POLICY
from service.runtime.worker import Runtime
from tests.support.isolated_worker import RecordingResponder, isolated_settings, wait_for
from tests.support.kafka_helpers import event, has_marker, read_topic
from tests.support.metrics import metric_value
from warden.contract.findings import Finding
from warden.telemetry import metrics

pytestmark = pytest.mark.integration

Reloading = tuple[Runtime, Path, RecordingResponder]


@pytest.fixture(scope="module")
async def reloading(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Reloading]:
    """A worker whose policy is a private copy of the bundled one, polled every 0.1 s."""
    tmp = tmp_path_factory.mktemp("hot-reload")
    folder = tmp / "policy"
    shutil.copytree(BUNDLED_POLICY, folder)
    responder = RecordingResponder()
    settings = isolated_settings(kafka_bootstrap, tmp, policy=folder, policy_reload_s=0.1)
    async with Runtime(settings, responder=responder) as rt:
        yield rt, folder, responder


def pair(i: int) -> list[dict[str, Any]]:
    """One message: a tool the edit will approve, and one that stays unapproved (so it always yields a finding)."""
    return [event("support-bot-1", tool={"name": "ticket.close", "arguments": {"n": i}}),
            event("support-bot-1", tool={"name": "shell.exec", "arguments": {"n": i}})]


async def findings_until(rt: Runtime, message: list[dict[str, Any]]) -> dict[str, Finding]:
    """Every finding up to that message's shell.exec one, by event id. Every message is keyed by one agent and
    yields a shell.exec finding last, so that finding is the end marker: nothing sent before it is still to come."""
    records = await read_topic(rt.bootstrap, rt.settings.topic_findings, until=has_marker([message[1]["event_id"]]))
    findings = [Finding.model_validate_json(r.value) for r in records]
    by_event = {f.event_id: f for f in findings}
    assert len(by_event) == len(findings), "one finding per event"
    return by_event


async def test_an_approved_tool_stops_firing_after_the_edit_with_no_restart_and_no_lost_event(
    reloading: Reloading,
) -> None:
    rt, folder, _ = reloading
    assert rt.holder is not None  # set when the runtime started
    app, old = rt.app, rt.holder.current.sha256
    producer = AIOKafkaProducer(bootstrap_servers=rt.bootstrap)
    await producer.start()
    sent: list[list[dict[str, Any]]] = []

    async def send(i: int) -> None:
        message = pair(i)
        sent.append(message)
        await producer.send_and_wait(rt.settings.topic_activity, json.dumps(message).encode(), key=b"support-bot-1")

    async def keep_sending() -> None:
        i = 100
        while True:
            await send(i)
            i += 1
            await asyncio.sleep(0.02)

    try:
        for i in range(5):
            await send(i)
        judged_first = await findings_until(rt, sent[-1])
        assert set(judged_first) == {e["event_id"] for message in sent for e in message}  # both tools fire
        assert {f.policy_sha256 for f in judged_first.values()} == {old}, "judged by the old policy"
        flowing = asyncio.create_task(keep_sending())
        workflows = folder / "10-workflows.yaml"
        workflows.write_text(workflows.read_text().replace(
            "tools: [kb.search, kb.fetch_article, ticket.comment]",
            "tools: [kb.search, kb.fetch_article, ticket.comment, ticket.close]"))
        holder = rt.holder  # narrowed above, for the lambda
        await wait_for(lambda: holder.current.sha256 != old, what="the edited policy to go live")
        swapped_at = len(sent)
        await wait_for(lambda: len(sent) >= swapped_at + 5, what="a few more messages after the swap")
        flowing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flowing
        for i in range(5, 10):
            await send(i)
    finally:
        await producer.stop()

    new = rt.holder.current.sha256
    by_event = await findings_until(rt, sent[-1])
    judged_by = []
    for ticket, shell in sent:
        shell_finding = by_event[shell["event_id"]]  # KeyError here would be a lost event
        assert shell_finding.rule == "unapproved_tool"
        judged_by.append(shell_finding.policy_sha256)
        ticket_finding = by_event.get(ticket["event_id"])
        if shell_finding.policy_sha256 == old:  # one message, one policy: both judged by the old one
            assert ticket_finding is not None and ticket_finding.policy_sha256 == old
        else:
            assert shell_finding.policy_sha256 == new and ticket_finding is None
    flip = judged_by.index(new)
    assert len(by_event) == len(sent) + flip, "every shell.exec, and a ticket.close only under the old policy"
    assert judged_by == [old] * flip + [new] * (len(sent) - flip)  # swapped once, between two messages
    assert flip >= 5 and len(sent) - flip >= 5
    assert rt.app is app and metric_value(metrics.POLICY_RELOAD_OK) == 1


async def test_an_invalid_edit_keeps_the_live_policy_and_raises_a_critical_self_alert(reloading: Reloading) -> None:
    rt, folder, responder = reloading
    assert rt.holder is not None  # set when the runtime started
    live = rt.holder.current.sha256
    workflows = folder / "10-workflows.yaml"
    good = workflows.read_text()
    workflows.write_text(good.replace("agents: [research-rag-1]", "agents: [research-rag-1, billing-agent-1]"))
    try:
        [alert] = await wait_for(lambda: [f for f in responder.findings if f.rule == "policy_invalid"],
                                 what="the policy_invalid alert")
        assert (alert.severity.value, alert.owners.responder.id, alert.policy_sha256) == ("critical", "secops", live)
        assert "workflows.research-rag.agents.1" in alert.evidence["issue_1"]
        assert "already claimed by workflow 'billing-agent'" in alert.evidence["issue_1"]
        assert metric_value(metrics.POLICY_RELOAD_OK) == 0
        assert rt.holder.current.sha256 == live

        after = event("billing-agent-1", tool={"name": "shell.exec", "arguments": {"after": "invalid"}})
        producer = AIOKafkaProducer(bootstrap_servers=rt.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(rt.settings.topic_activity, json.dumps(after).encode(), key=b"billing-agent-1")
        finally:
            await producer.stop()
        finding = await wait_for(lambda: next((f for f in responder.findings if f.event_id == after["event_id"]), None),
                                 what="the finding for an event sent after the invalid edit")
        assert (finding.workflow, finding.policy_sha256) == ("billing-agent", live)  # still judged by the live one
    finally:
        workflows.write_text(good)
    await wait_for(lambda: metric_value(metrics.POLICY_RELOAD_OK) == 1, what="the reload gauge to recover")
    assert rt.holder.current.sha256 == live
