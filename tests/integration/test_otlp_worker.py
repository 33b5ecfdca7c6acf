"""Through a real worker and broker: OTLP spans from the real OpenTelemetry SDK, as the Collector's Kafka exporter
writes them (both encodings), become findings and incidents; bad span messages are dead-lettered with a reason; a
message whose spans wait for their agent is not committed until they are released."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan

from responders.incident_responder import IncidentResponder
from service.runtime.ingest.clients import ingest_group
from service.runtime.settings import Settings
from service.runtime.worker import Runtime
from tests.support.kafka_helpers import committed_offsets, has_marker, headers, produce, read_topic
from tests.support.metrics import metric_value
from tests.support.otel_spans import Encode, Recorder, otlp_json, otlp_proto
from warden.contract.findings import Finding
from warden.telemetry import metrics

pytestmark = pytest.mark.integration
T = TypeVar("T")


def _out_of_scope_turn(agent: str, tool: str = "shell.exec") -> list[ReadableSpan]:
    """One agent turn: an in-scope-looking lookup and an out-of-scope call, children exported before the agent."""
    rec = Recorder(**{"service.name": f"{agent}-svc"})
    with rec.agent(agent), rec.tool(tool, {"cmd": "id"}):
        pass
    return rec.finished()


def _trace_key(spans: list[ReadableSpan]) -> bytes:
    """The key the exporter writes with partition_traces_by_id: the trace id."""
    trace_id: int = spans[0].context.trace_id  # the SDK leaves ReadableSpan.context unannotated
    return trace_id.to_bytes(16, "big")


def _event_id(span: ReadableSpan) -> str:
    return f"otel:{span.context.trace_id:032x}:{span.context.span_id:016x}"


async def _findings(rt: Runtime, event_ids: list[str]) -> dict[str, Finding]:
    records = await read_topic(rt.bootstrap, rt.settings.topic_findings, until=has_marker(event_ids),
                               what=f"findings of {event_ids}", timeout=60)
    found = [Finding.model_validate_json(r.value) for r in records]
    return {f.event_id: f for f in found}


@pytest.mark.parametrize("encode", [otlp_proto, otlp_json], ids=["otlp_proto", "otlp_json"])
async def test_spans_become_findings_and_incidents_with_the_agent_of_a_parent_exported_after_them(
    worker_settings: Settings, encode: Encode
) -> None:
    settings = worker_settings.model_copy(update={"otlp_wait_s": 1.0})
    started = datetime.now(UTC)
    async with Runtime(settings) as rt:
        turn = _out_of_scope_turn("billing-agent-1")
        *children, parent = turn
        key = _trace_key(turn)
        # Two messages as a BatchSpanProcessor exports them: the tool span first, its agent span later.
        await produce(rt.bootstrap, settings.topic_otlp, [(key, encode(children)), (key, encode([parent]))])
        stranger = Recorder(**{"service.name": "mystery-svc"})
        with stranger.span("root"), stranger.tool("kb.search"):
            pass
        lone_tool, _never_sent = stranger.finished()
        await produce(rt.bootstrap, settings.topic_otlp, [(_trace_key([lone_tool]), encode([lone_tool]))])

        wanted = [_event_id(children[0]), _event_id(lone_tool)]
        findings = await _findings(rt, wanted)
        tool_finding = findings[_event_id(children[0])]
        assert (tool_finding.rule, tool_finding.agent_id, tool_finding.workflow) == (
            "unapproved_tool", "billing-agent-1", "billing-agent")
        unowned = findings[_event_id(lone_tool)]
        assert (unowned.rule, unowned.agent_id) == ("unowned_agent", "mystery-svc")  # after the wait, not dropped

        assert isinstance(rt.responder, IncidentResponder)
        store = rt.responder.store

        async def incidents() -> set[tuple[str, str]]:
            n = (await store.incidents.counts(since=started))["incidents"]
            views = [await store.incidents.incident(i) for i in range(1, n + 1)]
            return {(v.rule, v.agent_id) for v in views if v is not None}

        wanted_incidents = {("unapproved_tool", "billing-agent-1"), ("unowned_agent", "mystery-svc")}

        async def opened() -> set[tuple[str, str]] | None:
            found = await incidents()
            return found if wanted_incidents <= found else None

        await _eventually(opened, f"incidents {wanted_incidents}")


async def test_bad_span_messages_go_to_the_dlq_with_their_reason_and_the_good_ones_still_flow(
    worker_settings: Settings,
) -> None:
    settings = worker_settings.model_copy(update={"max_message_bytes": 64 * 1024})
    async with Runtime(settings) as rt:
        big = Recorder(**{"gen_ai.agent.id": "billing-agent-1"})
        for i in range(400):
            with big.tool("billing.lookup_invoice", {"invoice": f"INV-{i:05d}", "pad": "x" * 200}):
                pass
        oversized = otlp_proto(big.finished())
        assert len(oversized) > settings.max_message_bytes
        after = _out_of_scope_turn("support-bot-2")
        await produce(rt.bootstrap, settings.topic_otlp, [
            (b"bad", b"\x0a\xff\xff\xff\xff\x0f\x00"), (b"bad", oversized), (b"bad", b'{"resourceSpans": ['),
            (_trace_key(after), otlp_proto(after))])
        opened = settings.sealer().open_bytes
        dlq = await read_topic(rt.bootstrap, settings.topic_dlq, expect=3, what="three dead letters")
        assert [headers(r)["warden.reason_code"] for r in dlq] == ["malformed_protobuf", "too_large",
                                                                   "malformed_json"]
        assert {headers(r)["warden.source_topic"] for r in dlq} == {settings.topic_otlp}
        assert opened(dlq[0].value) == b"\x0a\xff\xff\xff\xff\x0f\x00"
        assert str(len(oversized)) in headers(dlq[1])["warden.reason"]
        findings = await _findings(rt, [_event_id(after[0])])
        assert findings[_event_id(after[0])].agent_id == "support-bot-2"


async def test_a_message_whose_spans_wait_for_their_agent_is_not_committed_until_they_are_released(
    worker_settings: Settings,
) -> None:
    settings = worker_settings.model_copy(update={"otlp_wait_s": 120.0})
    async with Runtime(settings) as rt:
        turn = _out_of_scope_turn("billing-agent-1")
        *children, parent = turn
        resolved = Recorder(**{"gen_ai.agent.id": "support-bot-2"})
        with resolved.tool("shell.exec"):
            pass
        resolved_span = resolved.finished()
        producer = AIOKafkaProducer(bootstrap_servers=rt.bootstrap)
        await producer.start()
        try:
            held = await producer.send_and_wait(settings.topic_otlp, otlp_proto(children), partition=0)
            # A later message on the same partition that resolves at once: its finding proves the worker read
            # past the held one.
            await producer.send_and_wait(settings.topic_otlp, otlp_proto(resolved_span), partition=0)
            await _findings(rt, [_event_id(resolved_span[0])])
            # Then one on partition 1: once the ingest has committed it, it has committed partition 0 as far as it
            # may.
            again = Recorder(**{"gen_ai.agent.id": "support-bot-2"})
            with again.tool("shell.exec"):
                pass
            await producer.send_and_wait(settings.topic_otlp, otlp_proto(again.finished()), partition=1)
            committed = await _eventually(lambda: _committed(rt, settings, 1, 1), "partition 1's commit")
            assert committed.get(0, 0) <= held.offset, committed
            # A second span of the same trace on another partition: the trace is split, and counted.
            split_before = metric_value(metrics.OTLP_SPLIT_SPANS)
            await producer.send_and_wait(settings.topic_otlp, otlp_proto([parent]), partition=1)
        finally:
            await producer.stop()
        findings = await _findings(rt, [_event_id(children[0])])
        assert findings[_event_id(children[0])].agent_id == "billing-agent-1"  # resolved across partitions
        assert metric_value(metrics.OTLP_SPLIT_SPANS) > split_before

        committed = await _eventually(lambda: _committed(rt, settings, 0, 2), "partition 0 committed past both "
                                      "messages once the held spans were released")
        assert committed[0] == 2


async def _committed(rt: Runtime, settings: Settings, partition: int, at_least: int) -> dict[int, int] | None:
    committed = await committed_offsets(rt.bootstrap, ingest_group(settings.app_id), settings.topic_otlp)
    return committed if committed.get(partition, 0) >= at_least else None


async def _eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    """Poll an async check until it returns something; fail naming what was awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_a_span_held_when_the_worker_stops_is_judged_by_the_next_one(worker_settings: Settings) -> None:
    """The stop does not wait for the hold, and the held span is not lost: its message was not committed."""
    turn = _out_of_scope_turn("billing-agent-1")
    *children, _parent_never_sent = turn
    resolved = Recorder(**{"gen_ai.agent.id": "support-bot-2"})
    with resolved.tool("shell.exec"):
        pass
    after = resolved.finished()
    async with Runtime(worker_settings.model_copy(update={"otlp_wait_s": 120.0})) as rt:
        await produce(rt.bootstrap, worker_settings.topic_otlp, [(_trace_key(turn), otlp_proto(children)),
                                                                  (_trace_key(after), otlp_proto(after))])
        await _findings(rt, [_event_id(after[0])])  # the worker reads, and holds the tool span for its agent
        assert metric_value(metrics.OTLP_HELD_SPANS) >= 1
    async with Runtime(worker_settings.model_copy(update={"otlp_wait_s": 0.5})) as rt:
        findings = await _findings(rt, [_event_id(children[0])])
        assert findings[_event_id(children[0])].agent_id == "billing-agent-1-svc"  # released unresolved
