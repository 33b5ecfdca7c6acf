"""Late agent identity: which agent a span belongs to, when tool spans name none and their `invoke_agent` parent is
exported after them.

In order: the span's own `gen_ai.agent.id`; the resource's `gen_ai.agent.id`; the resource's `service.name` when the
matrix lists it as an agent; an ancestor span of the same trace that resolved. A span waiting for an ancestor is
held per trace, bounded in time (`wait_s`) and memory (`max_spans` remembered over all traces, the least recently
active trace evicted first); one still unresolved after the wait is released with no agent, so the caller turns it
into an event of an agent no workflow owns (an `unowned_agent` finding): nothing is dropped in silence.

Pure and clock-injected (`now` is passed in). It also remembers which Kafka message (partition, offset) each held
span came from, so a host never commits past a message whose spans are still held (`lowest_held`).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.ingest.otlp_genai import resource_agent, service_name, span_agent
from streams.ingest.otlp_wire import Span

UNRESOLVED = "unresolved"


@dataclass(frozen=True)
class Bounds:
    """How long and how much the resolver may hold."""

    wait_s: float = 5.0  # a span waits this long for an ancestor that names its agent
    max_spans: int = 100_000  # spans remembered (held or not) over all traces
    trace_idle_s: float = 30.0  # a trace's spans are remembered this long after its last one (late children)


@dataclass(frozen=True)
class Resolved:
    """A span with the agent it acts for (None: unresolved) and how that was found."""

    span: Span
    agent_id: str | None
    resolution: str  # span, resource, service, ancestor, or "unresolved: why"
    partition: int
    offset: int


@dataclass
class _Held:
    span: Span
    partition: int
    offset: int
    since: float


@dataclass
class _Trace:
    parents: dict[str, str | None] = field(default_factory=dict)  # every span seen: its parent
    agents: dict[str, str] = field(default_factory=dict)  # spans whose agent is known
    waiting: dict[tuple[str, int, int], _Held] = field(default_factory=dict)  # by (span id, partition, offset)
    partitions: set[int] = field(default_factory=set)
    last_seen: float = 0.0

    @property
    def split(self) -> bool:
        return len(self.partitions) > 1


class AgentResolver:
    """Per-trace buffer of spans waiting for their agent; one per worker, all partitions of the span topic."""

    def __init__(self, bounds: Bounds | None = None) -> None:
        self.bounds = bounds or Bounds()
        self._traces: OrderedDict[str, _Trace] = OrderedDict()  # least recently active first
        self._remembered = 0
        self._held: dict[int, Counter[int]] = {}  # partition → offset → spans held from that message
        self.split_spans = 0  # spans that arrived on a trace already seen on another partition
        self.evicted_spans = 0  # held spans released early because the buffer was full

    def offer(self, spans: Iterable[Span], partition: int, offset: int, now: float, *,
              needs_agent: Callable[[Span], bool], is_agent: Callable[[str], bool]) -> list[Resolved]:
        """One message's spans in: those that resolve now (their own, or earlier spans' that this message's
        ancestors unblock) come out; the others are held. `needs_agent` says which spans become events; `is_agent`
        whether the matrix lists an id as an agent (for `service.name`)."""
        out: list[Resolved] = []
        touched: list[_Trace] = []
        for span in spans:
            trace = self._traces.get(span.trace_id)
            if trace is None:
                trace = self._traces[span.trace_id] = _Trace()
            else:
                self._traces.move_to_end(span.trace_id)
            trace.last_seen = now
            trace.partitions.add(partition)
            if trace.split:
                self.split_spans += 1
            if span.span_id not in trace.parents:
                self._remembered += 1
            trace.parents[span.span_id] = span.parent_id
            agent, how = _direct(span, is_agent)
            if agent is not None:
                trace.agents[span.span_id] = agent
                if needs_agent(span):
                    out.append(Resolved(span, agent, how, partition, offset))
            elif needs_agent(span) and (span.span_id, partition, offset) not in trace.waiting:
                # (a message delivered again, after a rebalance, does not hold its spans twice)
                trace.waiting[(span.span_id, partition, offset)] = _Held(span, partition, offset, now)
                self._held.setdefault(partition, Counter())[offset] += 1
            touched.append(trace)
        for trace in _unique(touched):
            out.extend(self._settle(trace))
        out.extend(self._evict())
        return out

    def release(self, now: float) -> list[Resolved]:
        """Spans whose wait is over come out unresolved; traces idle for `trace_idle_s` are forgotten."""
        out: list[Resolved] = []
        for trace_id in list(self._traces):
            trace = self._traces[trace_id]
            expired = [h for h in trace.waiting.values() if now - h.since >= self.bounds.wait_s]
            if expired:
                trace.waiting = {k: h for k, h in trace.waiting.items() if now - h.since < self.bounds.wait_s}
                why = (f"{UNRESOLVED}: trace split across partitions" if trace.split else
                       f"{UNRESOLVED}: no ancestor span naming an agent arrived within {self.bounds.wait_s:g}s")
                out.extend(self._unheld(h, None, why) for h in expired)
            if not trace.waiting and now - trace.last_seen >= self.bounds.trace_idle_s:
                self._forget(trace_id)
        return out

    def lowest_held(self, partition: int) -> int | None:
        """The lowest offset of `partition` with a span still held: a host must not commit at or past it."""
        held = self._held.get(partition)
        return min(held) if held else None

    def holds(self, partition: int, offset: int) -> bool:
        held = self._held.get(partition)
        return held is not None and offset in held

    @property
    def held(self) -> int:
        return sum(sum(c.values()) for c in self._held.values())

    @property
    def remembered(self) -> int:
        return self._remembered

    def forget_partitions(self, partitions: Iterable[int]) -> int:
        """The partitions moved away (or a rebalance started): drop their held spans, which Kafka re-delivers to
        the next owner since their messages were never committed. Returns how many were dropped."""
        gone = set(partitions)
        dropped = 0
        for trace in self._traces.values():
            keep = {k: h for k, h in trace.waiting.items() if h.partition not in gone}
            dropped += len(trace.waiting) - len(keep)
            trace.waiting = keep
        for p in gone:
            self._held.pop(p, None)
        return dropped

    def _settle(self, trace: _Trace) -> list[Resolved]:
        """Resolve the trace's waiting spans whose ancestry is now known, repeatedly (a resolved span unblocks its
        own children)."""
        out: list[Resolved] = []
        progress = True
        while progress and trace.waiting:
            progress = False
            still: dict[tuple[str, int, int], _Held] = {}
            for k, h in trace.waiting.items():
                agent, final = _ancestor(trace, h.span.span_id)
                if agent is not None:
                    trace.agents[h.span.span_id] = agent
                    out.append(self._unheld(h, agent, "ancestor"))
                    progress = True
                elif final:
                    out.append(self._unheld(h, None, f"{UNRESOLVED}: no span of its trace names an agent"))
                else:
                    still[k] = h
            trace.waiting = still
        return out

    def _evict(self) -> list[Resolved]:
        out: list[Resolved] = []
        while self._remembered > self.bounds.max_spans and len(self._traces) > 1:
            trace_id = next(iter(self._traces))
            trace = self._traces[trace_id]
            for h in trace.waiting.values():
                self.evicted_spans += 1
                out.append(self._unheld(h, None, f"{UNRESOLVED}: evicted, more than {self.bounds.max_spans} spans "
                                                 "buffered"))
            trace.waiting = {}
            self._forget(trace_id)
        return out

    def _forget(self, trace_id: str) -> None:
        trace = self._traces.pop(trace_id)
        self._remembered -= len(trace.parents)

    def _unheld(self, h: _Held, agent: str | None, how: str) -> Resolved:
        held = self._held.get(h.partition)
        if held is not None:
            held[h.offset] -= 1
            if held[h.offset] <= 0:
                del held[h.offset]
        return Resolved(h.span, agent, how, h.partition, h.offset)


def _direct(span: Span, is_agent: Callable[[str], bool]) -> tuple[str | None, str]:
    agent = span_agent(span)
    if agent:
        return agent, "span"
    agent = resource_agent(span)
    if agent:
        return agent, "resource"
    service = service_name(span)
    if service and is_agent(service):
        return service, "service"
    return None, ""


def _ancestor(trace: _Trace, span_id: str) -> tuple[str | None, bool]:
    """The agent of the nearest ancestor that has one, and whether the answer is final (False: an ancestor has not
    arrived yet)."""
    seen = {span_id}
    cur = trace.parents.get(span_id)
    while cur is not None and cur not in seen:
        seen.add(cur)
        if cur not in trace.parents:
            return None, False
        agent = trace.agents.get(cur)
        if agent:
            return agent, True
        cur = trace.parents[cur]
    return None, True


def _unique(traces: list[_Trace]) -> list[_Trace]:
    seen: set[int] = set()
    out = []
    for t in traces:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
