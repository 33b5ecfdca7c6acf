"""The OTLP span ingest format: Collector Kafka-exporter messages → activity events, with late agent identity.

Unlike the native format it holds state: a span whose agent is only named by an ancestor exported later waits in
the `AgentResolver`, so events come out grouped by the message they came from (`Batch`), both when a message is
taken and when held spans are released by time. A host:
- calls `take(value, key=..., partition=..., offset=..., now=..., policy=...)` per message,
- calls `release(now, policy)` on a timer (every second or so),
- judges each returned `Batch`'s events and dead-letters its rejections against that batch's source message,
- never commits a partition's offset past `lowest_held(partition)` (a held span is not lost by a crash: its message
  is delivered again), and calls `forget_partitions` when partitions are revoked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from streams.ingest.base import Decoded, Decoder, Rejection
from streams.ingest.otlp_agents import SPANS, UNRESOLVED, AgentResolver, Bounds, Resolved
from streams.ingest.otlp_genai import is_activity, resource_agent, service_name, span_agent, to_event
from streams.ingest.otlp_wire import Encoding, Span, decode_spans
from warden.policy import Policy
from warden.policy.tools import ToolCatalogue
from warden.telemetry import metrics

UNKNOWN_AGENT = "otel:unknown"  # the agent id of an unresolved span that has no service.name either


@dataclass
class Batch:
    """Events and rejections from one source message (partition, offset); indices are span positions in it."""

    partition: int
    offset: int
    decoded: Decoded


class OtlpIngest:
    """One per worker for the span topic: decode, resolve agents, map to events."""

    def __init__(self, encoding: Encoding = "auto", bounds: Bounds | None = None, max_bytes: int = 1_048_576,
                 resolver: AgentResolver | None = None) -> None:
        self.encoding: Encoding = encoding
        self.max_bytes = max_bytes
        self.resolver = resolver or AgentResolver(bounds)  # shared with the log topic's ingest (otlp_logs.py)
        self.unkeyed_messages = 0  # messages with no key: the exporter's partition_traces_by_id is off

    def take(self, value: bytes | None, *, key: bytes | None, partition: int, offset: int, now: float,
             policy: Policy) -> list[Batch]:
        """One message in. The first batch is this message's (its rejections, the spans that resolved at once);
        any others are earlier messages' spans that this one's ancestors resolved."""
        spans = decode_spans(value, self.max_bytes, self.encoding)
        own = Batch(partition, offset, Decoded(rejections=list(spans.rejections)))
        if not spans.spans:
            return [own]
        if not key:
            self.unkeyed_messages += 1
        split_before = self.resolver.split_spans
        resolved = self.resolver.offer(spans.spans, partition, offset, now, needs_agent=is_activity,
                                       is_agent=policy.assignments.__contains__, session=_conversation)
        resolved += self.resolver.take_pending(SPANS)
        if self.resolver.split_spans > split_before:
            metrics.OTLP_SPLIT_SPANS.inc(self.resolver.split_spans - split_before)
        ignored = sum(1 for s in spans.spans if not is_activity(s))
        if ignored:
            metrics.OTLP_SPANS.labels(outcome="ignored").inc(ignored)
        return self._batches(resolved, policy, own)

    def release(self, now: float, policy: Policy) -> list[Batch]:
        """Held spans whose wait is over, as events of an unresolved agent (the `unowned_agent` detector fires)."""
        return self._batches([*self.resolver.take_pending(SPANS), *self.resolver.release(now)], policy, None)

    def lowest_held(self, partition: int) -> int | None:
        return self.resolver.lowest_held(partition)

    def holds(self, partition: int, offset: int) -> bool:
        return self.resolver.holds(partition, offset)

    def forget_partitions(self, partitions: Iterable[int]) -> int:
        return self.resolver.forget_partitions(partitions)

    def _batches(self, resolved: list[Resolved], policy: Policy, own: Batch | None) -> list[Batch]:
        batches: dict[tuple[int, int], Batch] = {}
        if own is not None:
            batches[(own.partition, own.offset)] = own
        for r in resolved:
            batch = batches.get((r.partition, r.offset))
            if batch is None:
                batch = batches[(r.partition, r.offset)] = Batch(r.partition, r.offset, Decoded())
            _map(r, policy.tools, batch.decoded)
        return list(batches.values())


def _conversation(span: Span) -> str | None:
    """The conversation a span names (its GenAI, MCP or OpenInference id): log records emitted in it take it."""
    for key in ("gen_ai.conversation.id", "mcp.session.id", "session.id"):
        value = span.attributes.get(key)
        if isinstance(value, str) and value:
            return value[:256]
    return None


def _map(r: Resolved, tools: ToolCatalogue, out: Decoded, *, count: bool = True) -> None:
    agent = r.agent_id or service_name(r.span) or UNKNOWN_AGENT
    try:
        event = to_event(r.span, agent, tools, r.resolution)
    except ValidationError as exc:  # named by field and message, never by value: a result may hold a secret
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in errors)
        out.rejections.append(Rejection("invalid_span", detail[:500], r.span.index))
        return
    except ValueError as exc:
        out.rejections.append(Rejection("invalid_span", f"{type(exc).__name__}: span values break the contract",
                                        r.span.index))
        return
    if event is None:
        return
    if count:
        metrics.OTLP_SPANS.labels(outcome="unresolved" if r.resolution.startswith(UNRESOLVED) else "event").inc()
    out.add(event, r.span.index)


def replay_decoder(encoding: Encoding, policy: Callable[[], Policy]) -> Decoder:
    """A stateless Decoder for rebuilding detector state from the span topic: only spans whose agent is named by
    the span, its resource or its service become events (ancestry is not replayed)."""

    def decode(raw: bytes | None, max_bytes: int) -> Decoded:
        spans = decode_spans(raw, max_bytes, encoding)
        current = policy()
        out = Decoded(rejections=list(spans.rejections))
        for span in spans.spans:
            if not is_activity(span):
                continue
            agent = span_agent(span) or resource_agent(span)
            how = "span" if span_agent(span) else "resource"
            if agent is None:
                service = service_name(span)
                if not service or service not in current.assignments:
                    continue
                agent, how = service, "service"
            _map(Resolved(span, agent, how, 0, 0), current.tools, out, count=False)
        return out

    return decode


_NO_TOOLS = ToolCatalogue({})


def decode_message(raw: bytes | None, max_bytes: int, encoding: Encoding = "auto") -> Decoded:
    """The stateless `Decoder` (FORMATS, `warden replay`): one message alone, agents resolved from each span, its
    resource or an ancestor span in the same message; a span left without one is an event of an unresolved agent
    (its service.name), as after the wait on the topic. The matrix is not consulted (no `service.name` mapping)."""
    spans = decode_spans(raw, max_bytes, encoding)
    out = Decoded(rejections=list(spans.rejections))
    resolver = AgentResolver(Bounds(wait_s=0.0))
    resolved = resolver.offer(spans.spans, 0, 0, 0.0, needs_agent=is_activity, is_agent=lambda _: False)
    for r in sorted([*resolved, *resolver.release(0.0)], key=lambda r: r.span.index):
        _map(r, _NO_TOOLS, out, count=False)
    return out
