"""The OTLP logs ingest: GenAI events from the Collector's kafka exporter (`otlp_logs`) → activity events, each joined
to the span it was emitted in by trace and span id.

The GenAI conventions moved their events off spans onto the logs signal: prompts, tool-call details and evaluation
results arrive as log records named by `event_name`. A record rarely names its agent; the span it belongs to (or an
ancestor) does, so a record is offered to the span topic's `AgentResolver` as a child of that span (lane "logs"),
waits for it like a tool span waits for its `invoke_agent` parent, and takes its agent and conversation. Decoding,
dead-lettering, the wait and its commit cap are the span topic's (`OtlpIngest`).

- `gen_ai.user.message` (body `content`) → `prompt`, `content.prompt` the user's text;
- `gen_ai.client.inference.operation.details` → a `prompt` from the user-role text of `gen_ai.input.messages`, a
  `tool_result` per `tool_call_response` part of the input and a `tool_call` per `tool_call` part of
  `gen_ai.output.messages`;
- `gen_ai.assistant.message`, `gen_ai.choice` (body `tool_calls`, `message.tool_calls`) → a `tool_call` per call
  (name, id, arguments);
- `gen_ai.tool.message` (body `content`, `id`) → `tool_result`: the result the agent read, for provenance;
- `gen_ai.evaluation.result` → `evaluation`: name, score value and label, explanation in `attributes`.

Event ids come from the content (a call id, or a digest of the text), not from a record's position: the details
event repeats the conversation so far on every model call, and the same request or result must be the same event
(and so the same finding id, which the responder dedups). Records of Warden's own verdicts (scope
`warden.verdicts`, exported back into traces by the runtime) are skipped, so a Collector that also feeds this topic
never loops them back. Everything read here is agent text: untrusted, capped, redacted on the way out.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from streams.ingest.base import Decoded, Decoder, Rejection
from streams.ingest.otlp import UNKNOWN_AGENT, Batch
from streams.ingest.otlp_agents import UNRESOLVED, AgentResolver, Resolved
from streams.ingest.otlp_content import MAX_REQUEST_CHARS, parse_json, tool_result, user_request
from streams.ingest.otlp_genai import resource_agent, span_agent
from streams.ingest.otlp_wire import Encoding, LogEvent, Span, decode_logs
from warden.contract.events import ActivityEvent, Kind
from warden.policy import Policy
from warden.telemetry import metrics

LANE = "logs"
VERDICT_SCOPE = "warden.verdicts"  # the instrumentation scope of Warden's own exported verdicts: never ingested
USER_MESSAGE = "gen_ai.user.message"
TOOL_MESSAGE = "gen_ai.tool.message"
ASSISTANT_MESSAGE = "gen_ai.assistant.message"
CHOICE = "gen_ai.choice"
DETAILS = "gen_ai.client.inference.operation.details"
EVALUATION = "gen_ai.evaluation.result"
EVENTS = frozenset({USER_MESSAGE, TOOL_MESSAGE, ASSISTANT_MESSAGE, CHOICE, DETAILS, EVALUATION})
_EVAL_KEYS = ("gen_ai.evaluation.name", "gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label",
              "gen_ai.response.id")
_MAX_EXPLANATION = 2_048
_TOOL_NAMES_KEPT = 10_000  # call id → tool name, for results that do not name their tool


def is_event(record: LogEvent) -> bool:
    """Whether the record is a GenAI event Warden reads (and so needs an agent)."""
    return record.event_name in EVENTS and record.scope != VERDICT_SCOPE


def as_span(record: LogEvent, partition: int, offset: int) -> Span:
    """The record as a span of its own, child of the span it was emitted in: the resolver joins it by ids. A record
    outside any trace is a trace of its own, so only its own attributes, its resource or its service name it."""
    me = f"log:{partition}:{offset}:{record.index}"
    return Span(trace_id=record.trace_id or me, span_id=me, parent_id=record.span_id, name=record.event_name,
                start_ns=record.time_ns, end_ns=record.time_ns, attributes=record.attributes,
                resource=record.resource, status_code=0, status_message="", index=record.index)


def conversation(span: Span) -> str | None:
    """The conversation a span (or a log record's own attributes) names."""
    for key in ("gen_ai.conversation.id", "session.id"):
        value = span.attributes.get(key)
        if isinstance(value, str) and value:
            return value[:256]
    return None


class ToolNames:
    """Call id → tool name, from the tool calls seen (a result often carries only the id), bounded."""

    def __init__(self, limit: int = _TOOL_NAMES_KEPT) -> None:
        self._names: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._limit = limit

    def remember(self, trace_id: str, call_id: str, name: str) -> None:
        self._names[(trace_id, call_id)] = name
        self._names.move_to_end((trace_id, call_id))
        while len(self._names) > self._limit:
            self._names.popitem(last=False)

    def name(self, trace_id: str, call_id: str) -> str | None:
        return self._names.get((trace_id, call_id))


def to_events(record: LogEvent, agent_id: str, session_id: str | None, resolution: str,
              names: ToolNames) -> list[ActivityEvent]:
    """The record's activity events acted by `agent_id`. Raises ValueError (pydantic's) when a value breaks the
    contract."""
    trace = record.trace_id or "none"
    extras: dict[str, Any] = {"otel.event_name": record.event_name, "warden.agent_resolution": resolution}
    service = service_name_of(record)
    if service:
        extras["service.name"] = service
    base: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.time_ns / 1e9, UTC),
        "agent": {"id": agent_id},
        "session_id": conversation_of(record) or session_id,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
    }
    fields: list[dict[str, Any]] = []
    name = record.event_name
    a = record.attributes
    body = record.body if isinstance(record.body, dict) else {}
    if name == USER_MESSAGE:
        text = _text_of(body.get("content")) if body else _text_of(record.body)
        if text:
            fields.append(_prompt(trace, record, text))
    elif name == DETAILS:
        request = user_request(a)
        if request:
            fields.append(_prompt(trace, record, request))
        for call in _parts(a.get("gen_ai.input.messages"), "tool_call"):  # earlier turns name the results' tools
            if call["id"]:
                names.remember(trace, call["id"], call["name"])
        for result in _parts(a.get("gen_ai.input.messages"), "tool_call_response"):
            fields.append(_result(trace, result["id"], names.name(trace, result["id"]) if result["id"] else None,
                                  result["response"]))
        for call in _parts(a.get("gen_ai.output.messages"), "tool_call"):
            fields.append(_call(trace, names, call["id"], call["name"], call["arguments"]))
    elif name in (ASSISTANT_MESSAGE, CHOICE):
        message = body.get("message") if name == CHOICE and isinstance(body.get("message"), dict) else body
        for call in _legacy_calls(message.get("tool_calls") if isinstance(message, dict) else None):
            fields.append(_call(trace, names, call["id"], call["name"], call["arguments"]))
    elif name == TOOL_MESSAGE:
        call_id = _str(body.get("id")) or _str(a.get("gen_ai.tool.call.id"))
        tool = _str(a.get("gen_ai.tool.name")) or (names.name(trace, call_id) if call_id else None)
        fields.append(_result(trace, call_id, tool, body.get("content", record.body if not body else None)))
    elif name == EVALUATION:
        fields.append(_evaluation(trace, record))
    return [ActivityEvent.model_validate({**base, **f, "attributes": {**extras, **f.get("attributes", {})}})
            for f in fields]


def conversation_of(record: LogEvent) -> str | None:
    value = record.attributes.get("gen_ai.conversation.id")
    return value[:256] if isinstance(value, str) and value else None


def service_name_of(record: LogEvent) -> str | None:
    value = record.resource.get("service.name")
    return value[:256] if isinstance(value, str) and value else None


def _prompt(trace: str, record: LogEvent, text: str) -> dict[str, Any]:
    text = text[:MAX_REQUEST_CHARS]
    return {"event_id": f"otel:{trace}:prompt:{_digest(text)}", "kind": Kind.prompt,
            "content": {"prompt": text}}


def _result(trace: str, call_id: str | None, tool: str | None, response: Any) -> dict[str, Any]:
    result = tool_result({"gen_ai.tool.call.result": response}) if response is not None else None
    key = call_id or _digest(json.dumps(response, sort_keys=True, default=str))
    return {"event_id": f"otel:{trace}:result:{key}"[:256], "kind": Kind.tool_result,
            "tool": {"name": tool or "unknown", "call_id": call_id, "result": result}}


def _call(trace: str, names: ToolNames, call_id: str | None, tool: str | None, arguments: Any) -> dict[str, Any]:
    tool = tool or "unknown"
    if call_id:
        names.remember(trace, call_id, tool)
    args = _arguments(arguments)
    key = call_id or _digest(tool + json.dumps(args, sort_keys=True, default=str))
    return {"event_id": f"otel:{trace}:call:{key}"[:256], "kind": Kind.tool_call,
            "tool": {"name": tool, "call_id": call_id, "arguments": args}}


def _evaluation(trace: str, record: LogEvent) -> dict[str, Any]:
    a = record.attributes
    extras = {k: a[k] for k in _EVAL_KEYS if isinstance(a.get(k), str | int | float) and not isinstance(a[k], bool)}
    explanation = a.get("gen_ai.evaluation.explanation")
    if isinstance(explanation, str) and explanation:
        extras["gen_ai.evaluation.explanation"] = explanation[:_MAX_EXPLANATION]
    key = _digest(json.dumps(extras, sort_keys=True, default=str))
    return {"event_id": f"otel:{trace}:{record.span_id or 'none'}:evaluation:{key}", "kind": Kind.evaluation,
            "attributes": extras}


def _parts(messages: Any, kind: str) -> Iterator[dict[str, Any]]:
    """The parts of one type in GenAI messages (`[{role, parts: [{type, ...}]}]`, or their JSON text)."""
    if isinstance(messages, str):
        messages = parse_json(messages)
    if not isinstance(messages, list):
        return
    for message in messages:
        parts = message.get("parts") if isinstance(message, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and part.get("type") == kind:
                yield {"id": _str(part.get("id")), "name": _str(part.get("name")),
                       "arguments": part.get("arguments"), "response": part.get("response", part.get("result"))}


def _legacy_calls(calls: Any) -> Iterator[dict[str, Any]]:
    """The deprecated events' `tool_calls`: `[{id, type: function, function: {name, arguments}}]`."""
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        found = call.get("function")
        function: dict[str, Any] = found if isinstance(found, dict) else {}
        yield {"id": _str(call.get("id")), "name": _str(function.get("name")), "arguments": function.get("arguments")}


def _arguments(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        parsed = parse_json(raw)
        return parsed if isinstance(parsed, dict) else {"value": raw}
    return raw if isinstance(raw, dict) else {"value": raw}


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content or None
    if isinstance(content, list):  # parts
        texts = [p.get("content", p.get("text")) for p in content
                 if isinstance(p, dict) and p.get("type", "text") == "text"]
        joined = "\n\n".join(t for t in texts if isinstance(t, str) and t)
        return joined or None
    return None


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = str(value)
    return text[:256] or None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class LogIngest:
    """One per worker for the log topic, sharing the span topic's resolver: decode, join to spans, map."""

    def __init__(self, resolver: AgentResolver, encoding: Encoding = "auto", max_bytes: int = 1_048_576) -> None:
        self.encoding: Encoding = encoding
        self.max_bytes = max_bytes
        self.resolver = resolver
        self.names = ToolNames()
        self._records: dict[str, LogEvent] = {}  # by pseudo-span id: the records offered and not yet mapped
        self.unkeyed_messages = 0  # messages with no key: the exporter's partition_logs_by_trace_id is off

    def take(self, value: bytes | None, *, key: bytes | None, partition: int, offset: int, now: float,
             policy: Policy) -> list[Batch]:
        records = decode_logs(value, self.max_bytes, self.encoding)
        own = Batch(partition, offset, Decoded(rejections=list(records.rejections)))
        if records.records and not key:
            self.unkeyed_messages += 1
        ignored = sum(1 for r in records.records if not is_event(r))
        if ignored:
            metrics.OTLP_LOG_RECORDS.labels(outcome="ignored").inc(ignored)
        spans = []
        for record in records.records:
            if is_event(record):
                span = as_span(record, partition, offset)
                self._records[span.span_id] = record
                spans.append(span)
        resolved = self.resolver.offer(spans, partition, offset, now, needs_agent=lambda _: True,
                                       is_agent=policy.assignments.__contains__, lane=LANE, session=conversation)
        resolved += self.resolver.take_pending(LANE)
        return self._batches(resolved, own)

    def release(self, now: float, policy: Policy) -> list[Batch]:
        return self._batches([*self.resolver.take_pending(LANE), *self.resolver.release(now, LANE)], None)

    def lowest_held(self, partition: int) -> int | None:
        return self.resolver.lowest_held(partition, LANE)

    def holds(self, partition: int, offset: int) -> bool:
        return self.resolver.holds(partition, offset, LANE)

    def forget_partitions(self, partitions: Iterable[int]) -> int:
        gone = tuple(f"log:{p}:" for p in partitions)
        self._records = {k: r for k, r in self._records.items() if not k.startswith(gone)}
        return self.resolver.forget_partitions([int(g.split(":")[1]) for g in gone], LANE)

    def _batches(self, resolved: list[Resolved], own: Batch | None) -> list[Batch]:
        batches: dict[tuple[int, int], Batch] = {}
        if own is not None:
            batches[(own.partition, own.offset)] = own
        for r in resolved:
            record = self._records.pop(r.span.span_id, None)
            if record is None:  # its partition was revoked meanwhile: the next owner reads it again
                continue
            batch = batches.get((r.partition, r.offset))
            if batch is None:
                batch = batches[(r.partition, r.offset)] = Batch(r.partition, r.offset, Decoded())
            _map(r, record, self.names, batch.decoded)
        return list(batches.values())


def _map(r: Resolved, record: LogEvent, names: ToolNames, out: Decoded, *, count: bool = True) -> None:
    agent = r.agent_id or service_name_of(record) or UNKNOWN_AGENT
    try:
        events = to_events(record, agent, r.session_id, r.resolution, names)
    except ValidationError as exc:  # named by field and message, never by value: a result may hold a secret
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in errors)
        out.rejections.append(Rejection("invalid_log_record", detail[:500], record.index))
        return
    except ValueError as exc:
        out.rejections.append(Rejection("invalid_log_record", f"{type(exc).__name__}: values break the contract",
                                        record.index))
        return
    if count:
        outcome = "unresolved" if r.resolution.startswith(UNRESOLVED) else "event"
        metrics.OTLP_LOG_RECORDS.labels(outcome=outcome).inc()
    for event in events:
        out.add(event, record.index)


def _direct_agent(span: Span) -> str | None:
    return span_agent(span) or resource_agent(span)


def replay_decoder(encoding: Encoding, policy: Callable[[], Policy]) -> Decoder:
    """A stateless Decoder for rebuilding detector state from the log topic: only records whose agent is named by
    the record, its resource or its service become events (the join to spans is not replayed)."""

    def decode(raw: bytes | None, max_bytes: int) -> Decoded:
        return _alone(raw, max_bytes, encoding, policy().assignments.__contains__)

    return decode


def decode_message(raw: bytes | None, max_bytes: int, encoding: Encoding = "auto") -> Decoded:
    """The stateless `Decoder` (FORMATS, `warden replay`): one message alone; a record's agent is its own, its
    resource's or its service's (the spans it belongs to are on another topic)."""
    return _alone(raw, max_bytes, encoding, lambda _: True)


def _alone(raw: bytes | None, max_bytes: int, encoding: Encoding, is_agent: Callable[[str], bool]) -> Decoded:
    records = decode_logs(raw, max_bytes, encoding)
    out = Decoded(rejections=list(records.rejections))
    names = ToolNames()
    for record in records.records:
        if not is_event(record):
            continue
        span = as_span(record, 0, 0)
        agent, how = _direct_agent(span), "span"
        if agent is None:
            service = service_name_of(record)
            if not service or not is_agent(service):
                continue
            agent, how = service, "service"
        _map(Resolved(span, agent, how, 0, 0, LANE, conversation(span)), record, names, out, count=False)
    return out
