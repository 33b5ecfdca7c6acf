"""Detector state per assigned partition, rebuilt from the activity log when a partition arrives or the worker starts.

Detector state (windows, approvals) lives in memory, but it is a function of the log: producers key by agent, so
all of an agent's events are in one partition, and the state a worker needs for a partition is what that
partition's recent past leaves behind. So when a worker first sees a partition it holds no state for (it just
started, or a rebalance moved the partition here), it reads that partition again, with its own aiokafka consumer
(manual assignment, no group, nothing committed), from `lookback(policy)` + a margin before the event up to the
offset before it, and replays those events into a fresh state with their findings discarded: whoever committed
past them has judged them already. Only then is the event itself judged.

A partition the worker keeps through a rebalance keeps its state; Kafka re-delivers it from the last committed
offset, and `DetectorState.first_time` recognises the messages already applied. A kept partition whose first
message after a rebalance lies beyond the offsets applied here (another worker held it meanwhile, e.g. after this
one was dropped from the group) is rebuilt too.

The read is bounded (the newest `max_messages` below the event, `max_seconds`), logged, and never trusts the
high watermark (Tansu's is wrong): it reads until the consumer's position reaches the event's offset. On Tansu,
`offsets_for_times` answers offset 0 with timestamp -1 whatever the time asked; that, and a broker that finds no
record that recent (None), fall back to the beginning of the partition, and records older than the look-back are
skipped without decoding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from service.runtime.kafka_access import KafkaAccess, access
from streams.detectors import DetectorState, lookback, provenance, replay
from streams.detectors.provenance_state import ProvenanceLedger, Session
from streams.ingest import Decoder
from warden.contract.containment import QuarantineMark
from warden.policy import Policy
from warden.telemetry import metrics

log = logging.getLogger("warden.state")

TP = tuple[str, int]

@dataclass(frozen=True)
class RebuildLimits:
    """How far back and how long a rebuild may read. The margin covers producer clock skew and events that reach
    Kafka a little after they happened (windows are in event time, the start is found by record time)."""

    margin_s: float = 120.0
    max_messages: int = 100_000  # the newest messages below the event: the window's start may be cut off
    max_seconds: float = 10.0  # the batch waits for the rebuild; a rebalance waits for the batch
    yield_every: int = 1_000  # events between yields to the event loop (heartbeats, web, other agents)


@dataclass
class Rebuilt:
    """What one rebuild read and how long it took: logged, and returned for tests and measurements."""

    topic: str
    partition: int
    target: int  # the first offset not read: the event that triggered the rebuild
    start: int | None = None
    messages: int = 0  # read below the target
    too_old: int = 0  # of those, skipped by record time (a broker that cannot seek by time)
    events: int = 0  # replayed into the state
    seconds: float = 0.0
    cut_off: bool = False  # max_messages moved the start later than the look-back asked for
    incomplete: str | None = None  # why the read stopped before the target, if it did

    @property
    def outcome(self) -> str:
        if self.incomplete:
            return "incomplete"
        return "cut_off" if self.cut_off else "complete"


class PartitionStates:
    """The worker's detector state, one `DetectorState` per assigned activity partition.

    Per partition, so that a partition that moves away takes exactly its own state with it (the next owner
    rebuilds it), and the state of a partition is always the replay of that partition's log.
    """

    def __init__(
        self,
        kafka: KafkaAccess | str,
        decode: Decoder,
        max_message_bytes: int,
        policy: Callable[[], Policy],
        limits: RebuildLimits | None = None,
        *,
        quarantined: Mapping[str, QuarantineMark] | None = None,
    ) -> None:
        self._kafka = access(kafka)
        self._quarantined = quarantined  # the worker's control view, shared by every partition's state
        self._decode = decode
        self._max_message_bytes = max_message_bytes
        self._policy = policy
        self.limits = limits or RebuildLimits()
        self._states: dict[TP, DetectorState] = {}
        self._unverified: set[TP] = set()  # kept through a rebalance: check that nobody else moved them on
        self.rebuilt: list[Rebuilt] = []  # the last few rebuilds, newest last (tests, diagnostics)

    def provenance(self, agent_id: str, session_id: str | None) -> Session | None:
        """What this worker's partitions read in that session (the approval path asks before a call), or None when
        no partition here holds it: the agent's partition is another worker's, or the session read nothing yet."""
        key = provenance.session_key(agent_id, session_id)
        for state in self._states.values():
            ledger = state.by_rule.get(provenance.info.id)
            found = ledger.get(key) if isinstance(ledger, ProvenanceLedger) else None
            if found is not None:
                return found
        return None

    def current(self, topic: str, partition: int, offset: int) -> DetectorState | None:
        """The partition's state if it holds no gap before `offset`; None when it must be rebuilt first."""
        tp = (topic, partition)
        state = self._states.get(tp)
        if state is None or not self._unverified or tp not in self._unverified:
            return state
        self._unverified.discard(tp)
        applied = state.applied(topic, partition)
        if applied is not None and offset > applied + 1:
            log.warning("%s[%d] resumes at offset %d but this worker applied only up to %d: another worker held "
                        "it meanwhile; rebuilding its detector state", topic, partition, offset, applied)
            del self._states[tp]
            return None
        return state

    async def rebuild(self, topic: str, partition: int, offset: int, record_ts: float | None) -> DetectorState:
        """A new state for the partition, rebuilt from the log below `offset` (the event about to be judged,
        whose record timestamp is `record_ts` in seconds), and kept as the partition's state."""
        state = DetectorState(self._quarantined)
        report = await self.replay_log(state, topic, partition, offset, record_ts)
        self._states[(topic, partition)] = state
        self.rebuilt = [*self.rebuilt[-31:], report]
        return state

    def on_revoked(self) -> None:
        """A rebalance started: whatever this worker keeps must be checked for continuity at its next message."""
        self._unverified = set(self._states)

    def on_assigned(self, assigned: Iterable[TP]) -> None:
        """The new assignment: drop the state of every partition that moved away (its new owner rebuilds it)."""
        keep = set(assigned)
        for tp in [tp for tp in self._states if tp not in keep]:
            del self._states[tp]
            self._unverified.discard(tp)
            log.info("%s[%d] moved to another worker: its detector state is dropped here", *tp)

    def __contains__(self, tp: object) -> bool:
        return tp in self._states

    async def replay_log(self, state: DetectorState, topic: str, partition: int, target: int,
                         record_ts: float | None) -> Rebuilt:
        """Read [look-back start, target) of the partition into `state`, findings discarded, and mark everything
        below `target` as applied. Never raises for a broker problem: the state is then partial, and logged so."""
        started = time.perf_counter()
        report = Rebuilt(topic, partition, target)
        policy = self._policy()
        anchor = time.time() if record_ts is None else min(time.time(), record_ts)
        since_ms = max(0, int((anchor - lookback(policy).total_seconds() - self.limits.margin_s) * 1000))
        if target > 0:
            try:
                await self._read(state, policy, report, since_ms)
            except (KafkaError, OSError, TimeoutError) as exc:
                report.incomplete = f"{type(exc).__name__}: {exc}"
        state.first_time(topic, partition, target - 1)  # below the committed offset: judged by whoever committed
        report.seconds = time.perf_counter() - started
        metrics.REBUILDS.labels(outcome=report.outcome).inc()
        metrics.REBUILD_EVENTS.inc(report.events)
        metrics.REBUILD_SECONDS.observe(report.seconds)
        level = logging.WARNING if report.outcome != "complete" else logging.INFO
        log.log(level, "rebuilt detector state of %s[%d] from offsets %s..%d: %d messages (%d older than the "
                "look-back), %d events in %.3fs%s%s", topic, partition, report.start, target - 1, report.messages,
                report.too_old, report.events, report.seconds,
                f"; capped at the newest {self.limits.max_messages} messages" if report.cut_off else "",
                f"; INCOMPLETE ({report.incomplete}): some windows or approvals may be missing"
                if report.incomplete else "")
        return report

    async def _read(self, state: DetectorState, policy: Policy, report: Rebuilt, since_ms: int) -> None:
        limits = self.limits
        tp = TopicPartition(report.topic, report.partition)
        fetch_bytes = max(8 * 1024 * 1024, 2 * self._max_message_bytes)
        consumer = self._kafka.consumer(
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=100, max_partition_fetch_bytes=fetch_bytes, fetch_max_bytes=fetch_bytes,
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            found = (await consumer.offsets_for_times({tp: since_ms})).get(tp)
            if found is None or found.timestamp < 0:  # none that recent, or a broker that cannot tell (Tansu)
                start = (await consumer.beginning_offsets([tp]))[tp]
            else:
                start = found.offset
            if start < report.target - limits.max_messages:
                start, report.cut_off = report.target - limits.max_messages, True
            report.start = start
            if start >= report.target:
                return
            consumer.seek(tp, start)
            deadline = time.monotonic() + limits.max_seconds
            since_yield = 0
            while await consumer.position(tp) < report.target:  # never the high watermark: Tansu's is wrong
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=500)
                for record in batch.get(tp, ()):
                    if record.offset >= report.target:
                        return
                    report.messages += 1
                    if record.timestamp < since_ms:
                        report.too_old += 1
                        continue
                    for event in self._decode(record.value, self._max_message_bytes).events:
                        replay(event, policy, state)
                        report.events += 1
                        since_yield += 1
                    state.first_time(report.topic, report.partition, record.offset)
                    if since_yield >= limits.yield_every:
                        since_yield = 0
                        await asyncio.sleep(0)
                    if time.monotonic() > deadline:
                        report.incomplete = f"stopped after {limits.max_seconds:g}s at offset {record.offset}"
                        return
                if time.monotonic() > deadline:  # nothing arrived (a gap, a slow broker)
                    report.incomplete = f"stopped after {limits.max_seconds:g}s"
                    return
        finally:
            await consumer.stop()
