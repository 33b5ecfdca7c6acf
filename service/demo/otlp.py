"""The demo's OpenTelemetry path: the scenario's agent turns sent again as OTLP spans, as the Collector's kafka
exporter writes them, so the same findings come from traces alone.

Each (agent, session) of the scenario becomes one trace: an `invoke_agent` span naming the agent, and one child span
per tool call, prompt or completion that names none (GenAI semantic conventions). As an SDK exports them, the
children go in one message and their parent in the next, keyed by trace id (`partition_traces_by_id: true`); the
traces alternate between `otlp_proto` and `otlp_json`. Approvals, secret access and identity changes are left to
the native path (their containment is the demo's to count once).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status, TracesData

from streams.ingest.otlp_wire import encode_json

MIRRORED = ("tool_call", "prompt", "completion")


def otlp_messages(events: Iterable[dict[str, Any]], run_id: str) -> tuple[list[tuple[bytes, bytes]], int]:
    """(key, value) messages for the span topic, and how many events Warden will read from them. `run_id` (hex)
    starts every trace id, so the run's findings are told apart (`otel:<run id>...`)."""
    turns: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in events:
        if e.get("kind") in MIRRORED:
            turns.setdefault((e["agent"]["id"], e.get("session_id") or ""), []).append(e)
    messages: list[tuple[bytes, bytes]] = []
    n_events = 0
    for t, ((agent, session), turn) in enumerate(sorted(turns.items())):
        trace_id = bytes.fromhex(f"{run_id}{t:024x}"[:32])
        parent_id = (t * 1000 + 1).to_bytes(8, "big")
        children = [_child(e, trace_id, parent_id, (t * 1000 + 2 + i).to_bytes(8, "big"), session)
                    for i, e in enumerate(turn)]
        start = min(_nanos(e["ts"]) for e in turn)
        parent = _span(trace_id, parent_id, None, f"invoke_agent {agent}", start_ns=start, attrs={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent, "gen_ai.conversation.id": session})
        encode = _proto if t % 2 == 0 else encode_json
        messages += [(trace_id, encode(_traces(agent, children))), (trace_id, encode(_traces(agent, [parent])))]
        n_events += len(children) + 1
    return messages, n_events


def _child(e: dict[str, Any], trace_id: bytes, parent_id: bytes, span_id: bytes, session: str) -> Span:
    attrs: dict[str, Any] = {"gen_ai.conversation.id": session}
    if e["kind"] == "tool_call":
        tool = e["tool"]
        attrs.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool["name"],
                      "gen_ai.tool.type": "function"})
        if tool.get("call_id"):
            attrs["gen_ai.tool.call.id"] = tool["call_id"]
        if tool.get("arguments") is not None:
            attrs["gen_ai.tool.call.arguments"] = json.dumps(tool["arguments"])
        if tool.get("result") is not None:  # what the agent read: text as is, JSON as its text
            result = tool["result"]
            attrs["gen_ai.tool.call.result"] = result if isinstance(result, str) else json.dumps(result)
        name = f"execute_tool {tool['name']}"
    else:
        content = e.get("content") or {}
        attrs["gen_ai.operation.name"] = "chat"
        if content.get("prompt") is not None:
            attrs["gen_ai.input.messages"] = json.dumps([{"role": "user", "parts": [
                {"type": "text", "content": content["prompt"]}]}])
        if content.get("output") is not None:
            attrs["gen_ai.output.messages"] = content["output"]
        name = "chat"
    span = _span(trace_id, span_id, parent_id, name, start_ns=_nanos(e["ts"]), attrs=attrs)
    outcome = e.get("outcome") or {}
    if outcome.get("status") == "error":
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=outcome.get("error") or ""))
    return span


def _span(trace_id: bytes, span_id: bytes, parent_id: bytes | None, name: str, *, start_ns: int,
          attrs: dict[str, Any]) -> Span:
    return Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent_id or b"", name=name,
                kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=start_ns, end_time_unix_nano=start_ns + 1_000_000,
                attributes=[KeyValue(key=k, value=AnyValue(string_value=str(v))) for k, v in attrs.items()])


def _traces(agent: str, spans: list[Span]) -> TracesData:
    resource = [KeyValue(key="service.name", value=AnyValue(string_value=f"{agent}-service"))]
    return TracesData(resource_spans=[ResourceSpans(resource=Resource(attributes=resource), scope_spans=[
        ScopeSpans(scope=InstrumentationScope(name="warden.demo"), spans=spans)])])


def _proto(data: TracesData) -> bytes:
    return bytes(data.SerializeToString())


def _nanos(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1_000_000_000)
