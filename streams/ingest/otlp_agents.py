"""Late agent identity: which agent a span belongs to, when tool spans name none and their `invoke_agent` parent is
exported after them.

In order: the span's own `gen_ai.agent.id`; the resource's `gen_ai.agent.id`; the resource's `service.name` when the
matrix lists it as an agent; an ancestor span of the same trace that resolved. A span waiting for an ancestor is
held per trace, bounded in time (`wait_s`) and memory (`max_spans` remembered over all traces, the least recently
active trace evicted first); one still unresolved after the wait is released with no agent, so the caller turns it
into an event of an agent no workflow owns (an `unowned_agent` finding): nothing is dropped in silence.

Pure and clock-injected (`now` is passed in). It also remembers which Kafka message (partition, offset) each held
span came from, so a host never commits past a message whose spans are still held (`lowest_held`).

One resolver serves two inputs, each a `lane`: the span topic ("spans") and the log topic ("logs"). A GenAI log
record is offered as a span of its own whose parent is the span it was emitted in, so it takes that span's agent
(and conversation) the same way, by trace and span id. What one lane's message resolves for the other lane (a span
that names the agent of log records waiting for it) is kept, still counted as held, until that lane takes it
(`take_pending`), so each lane judges and commits only its own messages.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.ingest.otlp_genai import resource_agent, service_name, span_agent
from streams.ingest.otlp_wire import Span

UNRESOLVED = "unresolved"
SPANS = "spans"  # the lane of the span topic; the log topic's is "logs"


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
    lane: str = SPANS
    session_id: str | None = None  # the conversation of the nearest span (itself or an ancestor) that names one


@dataclass
class _Held:
    span: Span
    partition: int
    offset: int
    since: float
    lane: str = SPANS


@dataclass
class _Trace:
    parents: dict[str, str | None] = field(default_factory=dict)  # every span seen: its parent
    agents: dict[str, str] = field(default_factory=dict)  # spans whose agent is known
    sessions: dict[str, str] = field(default_factory=dict)  # spans that name their conversation
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
        self._held: dict[tuple[str, int], Counter[int]] = {}  # (lane, partition) → offset → spans held from it
        self._pending: dict[str, list[Resolved]] = {}  # resolved by another lane's message, not yet taken
        self.split_spans = 0  # spans that arrived on a trace already seen on another partition
        self.evicted_spans = 0  # held spans released early because the buffer was full

    def offer(self, spans: Iterable[Span], partition: int, offset: int, now: float, *,
              needs_agent: Callable[[Span], bool], is_agent: Callable[[str], bool], lane: str = SPANS,
              session: Callable[[Span], str | None] = lambda _: None) -> list[Resolved]:
        """One message's spans in: those that resolve now (their own, or earlier spans' of this lane that this
        message's ancestors unblock) come out; the others are held. `needs_agent` says which spans become events;
        `is_agent` whether the matrix lists an id as an agent (for `service.name`); `session` the conversation a span
        names itself. Another lane's spans this message resolves wait for `take_pending(that lane)`."""
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
            conversation = session(span)
            if conversation:
                trace.sessions[span.span_id] = conversation
            agent, how = _direct(span, is_agent)
            if agent is not None:
                trace.agents[span.span_id] = agent
                if needs_agent(span):
                    out.append(Resolved(span, agent, how, partition, offset, lane,
                                        _session(trace, span.span_id)))
            elif needs_agent(span) and (span.span_id, partition, offset) not in trace.waiting:
                # (a message delivered again, after a rebalance, does not hold its spans twice)
                trace.waiting[(span.span_id, partition, offset)] = _Held(span, partition, offset, now, lane)
                self._held.setdefault((lane, partition), Counter())[offset] += 1
            touched.append(trace)
        for trace in _unique(touched):
            out.extend(self._settle(trace))
        out.extend(self._evict())
        return self._own(out, lane)

    def take_pending(self, lane: str) -> list[Resolved]:
        """What other lanes' messages resolved for `lane` since it last asked: no longer held once taken."""
        pending = self._pending.pop(lane, [])
        for r in pending:
            self._unhold(r.lane, r.partition, r.offset)
        return pending

    def _own(self, out: list[Resolved], lane: str) -> list[Resolved]:
        """Keep another lane's resolutions for it, still held (its message is not judged, so not committable)."""
        mine = [r for r in out if r.lane == lane]
        if len(mine) < len(out):
            for r in out:
                if r.lane != lane:
                    self._pending.setdefault(r.lane, []).append(r)
                    self._held.setdefault((r.lane, r.partition), Counter())[r.offset] += 1
        return mine

    def release(self, now: float, lane: str = SPANS) -> list[Resolved]:
        """The lane's spans whose wait is over come out unresolved; traces idle for `trace_idle_s` are
        forgotten."""
        out: list[Resolved] = []
        for trace_id in list(self._traces):
            trace = self._traces[trace_id]
            expired = [h for h in trace.waiting.values() if h.lane == lane and now - h.since >= self.bounds.wait_s]
            if expired:
                gone = {id(h) for h in expired}
                trace.waiting = {k: h for k, h in trace.waiting.items() if id(h) not in gone}
                why = (f"{UNRESOLVED}: trace split across partitions" if trace.split else
                       f"{UNRESOLVED}: no ancestor span naming an agent arrived within {self.bounds.wait_s:g}s")
                out.extend(self._unheld(h, None, why) for h in expired)
            if not trace.waiting and now - trace.last_seen >= self.bounds.trace_idle_s:
                self._forget(trace_id)
        return out

    def lowest_held(self, partition: int, lane: str = SPANS) -> int | None:
        """The lowest offset of the lane's `partition` with a span still held: a host must not commit at or past
        it."""
        held = self._held.get((lane, partition))
        return min(held) if held else None

    def holds(self, partition: int, offset: int, lane: str = SPANS) -> bool:
        held = self._held.get((lane, partition))
        return held is not None and offset in held

    @property
    def held(self) -> int:
        return sum(sum(c.values()) for c in self._held.values())

    @property
    def remembered(self) -> int:
        return self._remembered

    def forget_partitions(self, partitions: Iterable[int], lane: str = SPANS) -> int:
        """The lane's partitions moved away (or a rebalance started): drop their held spans, which Kafka
        re-delivers to the next owner since their messages were never committed. Returns how many were dropped."""
        gone = set(partitions)
        dropped = 0
        for trace in self._traces.values():
            keep = {k: h for k, h in trace.waiting.items() if h.lane != lane or h.partition not in gone}
            dropped += len(trace.waiting) - len(keep)
            trace.waiting = keep
        pending = self._pending.get(lane, [])
        kept = [r for r in pending if r.partition not in gone]
        dropped += len(pending) - len(kept)
        if pending:
            self._pending[lane] = kept
        for p in gone:
            self._held.pop((lane, p), None)
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
                    out.append(self._unheld(h, agent, "ancestor", _session(trace, h.span.span_id)))
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

    def _unheld(self, h: _Held, agent: str | None, how: str, session: str | None = None) -> Resolved:
        self._unhold(h.lane, h.partition, h.offset)
        return Resolved(h.span, agent, how, h.partition, h.offset, h.lane, session)

    def _unhold(self, lane: str, partition: int, offset: int) -> None:
        held = self._held.get((lane, partition))
        if held is not None:
            held[offset] -= 1
            if held[offset] <= 0:
                del held[offset]


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


def _session(trace: _Trace, span_id: str) -> str | None:
    """The conversation the span or its nearest ancestor names."""
    seen: set[str] = set()
    cur: str | None = span_id
    while cur is not None and cur not in seen:
        seen.add(cur)
        found = trace.sessions.get(cur)
        if found:
            return found
        cur = trace.parents.get(cur)
    return None


def _unique(traces: list[_Trace]) -> list[_Trace]:
    seen: set[int] = set()
    out = []
    for t in traces:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
