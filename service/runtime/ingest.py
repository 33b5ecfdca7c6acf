"""Batch ingest: the input topics consumed in bounded batches by one aiokafka consumer per worker, hosted by the
faust app, because faust pays ~150-250 µs per Kafka message (a task, a lock, an Event and an ack each) and has no
supported way to hand an agent a batch (see docs/architecture.md, "The hot path").

The loop: `getmany` → decode → detect (per partition state, `service.runtime.state_rebuild`) → each finding and
dead letter sent as soon as it is made; then, once `max_events` are judged since the last commit, or that commit is
`commit_every_s` old, or the input runs dry: await every acknowledgement → commit. So offsets are committed only
after the broker has acknowledged everything their messages produced; a failed produce is sent again and nothing is
committed until it is taken; a worker killed in between leaves them uncommitted and whoever reads them next
produces the same findings (same `finding_id`, which the responder dedups).

Its consumer group is `<app_id>.ingest` (a plain aiokafka consumer cannot join faust's group: another assignor
protocol). Where it has no offset of its own, the group is seeded from the faust group's committed offsets on the
input topics, so a cut-over from the old `warden.ingest` and `warden.otlp` agents neither re-reads nor skips
anything (`seed_from_old_group`).

Each input topic has a handler (`service.runtime.inputs`): the native one turns a message into its batch of events;
the span topic's holds spans until an ancestor names their agent, so a partition's commit stops at its lowest held
offset, a release tick in this loop (getmany's timeout bounds its wait) judges the spans whose wait is over, and a
revocation drops what is held (those messages are read again from the committed offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import stamina
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from prometheus_client import Counter

from service.runtime.inputs import Batch, InputHandler
from service.runtime.kafka_access import KafkaAccess, access
from service.runtime.policy_holder import PolicyHolder
from service.runtime.settings import Settings
from service.runtime.state_rebuild import PartitionStates
from service.runtime.topics import DLQ_HEADER_ROOM
from streams.detectors import DetectorState, detect
from streams.ingest import Decoded
from streams.verdict import Known
from warden.contract.events import ActivityEvent, Kind
from warden.contract.findings import Finding
from warden.contract.redact import redact_text
from warden.kit.retry import Backoff
from warden.kit.sealing import SCHEME, Sealer
from warden.telemetry import metrics

log = logging.getLogger("warden.ingest")

DELIVERY = Backoff(initial_s=0.2, max_s=30.0)  # findings and dead letters: sent again until the broker takes them
_EVENTS_BY_KIND = {kind: metrics.EVENTS.labels(kind=kind.value) for kind in Kind}  # a child per event costs 1.5 µs


def ingest_group(app_id: str) -> str:
    """The ingest consumer group of a worker whose faust app (and findings agent) uses the group `app_id`."""
    return f"{app_id}.ingest"


@dataclass(frozen=True)
class BatchLimits:
    """How much one batch may hold. Bounded in events, not messages: 2,000 batch-100 messages are 200k events,
    seconds of work, longer than a rebalance may wait for the batch in flight."""

    max_events: int = 5_000  # judged between two commits
    commit_every_s: float = 0.2  # a commit at least this often while events come in; at once when they stop
    max_records: int = 500  # messages per fetch: 500 batch messages of ~100 KB are 50 MB held at once
    yield_every: int = 500  # events between yields to the event loop (heartbeats, web, the findings agent)
    fetch_wait_ms: int = 10  # the broker's longest wait for data: the latency floor at low load (faust's: 1.5 s)


@dataclass
class Outgoing:
    """One record the batch produces: a finding (with what its metrics need) or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    finding: Finding | None = None
    reason_code: str | None = None  # a dead letter's


def sealed_dead_letter(sealer: Sealer, value: bytes | None, max_bytes: int) -> tuple[bytes | None, dict[str, bytes]]:
    """A dead letter's value and headers: the original bytes sealed whole (they may carry `credential.token` or any
    other secret, and a message that did not parse has no parts to pick out), cut first so that the sealed value
    fits in `max_bytes` (Fernet adds a third plus 73 bytes). `warden dlq replay` opens it again."""
    if value is None:
        return None, {}
    headers = {"warden.sealed": SCHEME}  # opened again by `warden dlq replay`
    room = (max_bytes * 3) // 4 - 128
    if len(value) > room:
        headers["warden.truncated_from"] = str(len(value)).encode()
        value = value[:room]
    return sealer.seal_bytes(value), headers


def dead_letter_record(settings: Settings, sealer: Sealer, *, topic: str, partition: int, offset: int,
                       key: bytes | None, value: bytes | None, reason_code: str, reason: str,
                       index: int | None = None) -> Outgoing:
    """The original bytes, sealed, with the reason and source coordinates as headers, bound for the DLQ."""
    sealed, headers = sealed_dead_letter(sealer, value, settings.dlq_max_bytes)
    headers.update({
        "warden.reason_code": reason_code.encode(),
        "warden.reason": redact_text(reason, 4096).encode("utf-8", "replace")[:4096],
        "warden.source_topic": topic.encode(),
        "warden.source_partition": str(partition).encode(),
        "warden.source_offset": str(offset).encode(),
    })
    if index is not None:
        headers["warden.batch_index"] = str(index).encode()
    return Outgoing(settings.topic_dlq, key, sealed, list(headers.items()), reason_code=reason_code)


class BatchJudge:
    """The ingest stage's shell around the pure core: one Kafka record in, the records it makes out.

    Each record is judged once by this worker: its partition's state says whether it was applied already (a
    rebalance re-delivers a kept partition from its committed offset), and a partition first seen here is rebuilt
    from the log first. Each event stands alone: one whose detection or finding cannot be made is dead-lettered by
    its batch index and the others go on."""

    def __init__(self, settings: Settings, holder: PolicyHolder, inputs: Mapping[str, InputHandler],
                 states: Mapping[str, PartitionStates], *, sealer: Sealer | None, dlq_sealer: Sealer) -> None:
        self._settings = settings
        self._holder = holder
        self.inputs = inputs
        self.states = states
        self._sealer = sealer
        self._dlq_sealer = dlq_sealer
        self._finding_topic = settings.topic_findings
        self._kinds: dict[Kind, int] = {}  # events judged by kind since `count_events`

    async def judge(self, record: ConsumerRecord, out: list[Outgoing]) -> int:
        """Append the record's findings and dead letters to `out`; returns the events it held (0 if a replay)."""
        topic, partition, offset = record.topic, record.partition, record.offset
        states = self.states[topic]
        handler = self.inputs[topic]
        state = states.current(topic, partition, offset)
        if state is None:  # first seen here since start or assignment: rebuild it from the log first
            state = await states.rebuild(topic, partition, offset, record.timestamp / 1000)
        if not state.first_time(topic, partition, offset) and not handler.retakes:
            metrics.REPLAYED.inc()
            return 0
        own, *earlier = handler.take(record, self._holder.current)
        events = self._judge_batch(record, own.decoded, state, out)
        if earlier:
            events += self.judge_released(topic, earlier, out)
        return events

    def release(self, out: list[Outgoing]) -> int:
        """Held events whose wait is over, of every holding input, judged into `out`; returns how many."""
        events = 0
        for topic, handler in self.inputs.items():
            if handler.release_every is not None:
                events += self.judge_released(topic, handler.release(self._holder.current), out)
        return events

    def judge_released(self, topic: str, batches: list[Batch], out: list[Outgoing]) -> int:
        """Earlier messages' events, each batch judged on its partition's state, dead-lettered against its source."""
        handler, states = self.inputs[topic], self.states[topic]
        events = 0
        for batch in batches:
            state = states.current(topic, batch.partition, batch.offset)
            if state is None:  # the partition moved away meanwhile: its next owner judges these events again
                continue
            source = handler.source(batch.partition, batch.offset)
            if source is None:  # not kept (it should be): its dead letters carry its coordinates only
                source = ConsumerRecord(topic, batch.partition, batch.offset, 0, 0, None, None, None, 0, 0, [])
            events += self._judge_batch(source, batch.decoded, state, out)
        handler.settled()
        return events

    def _judge_batch(self, record: ConsumerRecord, decoded: Decoded, state: DetectorState,
                     out: list[Outgoing]) -> int:
        for rejection in decoded.rejections:
            out.append(self._dead_letter(record, rejection.code, rejection.reason, rejection.index))
        self._judge_events(record, decoded, state, out)
        return len(decoded.events)

    def _judge_events(self, record: ConsumerRecord, decoded: Decoded, state: DetectorState,
                      out: list[Outgoing]) -> None:
        policy = self._holder.current
        kinds = self._kinds
        for position, ev in enumerate(decoded.events):
            kinds[ev.kind] = kinds.get(ev.kind, 0) + 1
            try:
                made = detect(ev, policy, state)
                if made:
                    out.extend(Outgoing(self._finding_topic, f.agent_id.encode(), f.model_dump_json().encode(),
                                        finding=f) for f in self._seal(made, ev))
            except Exception as exc:  # noqa: BLE001 - a pure step failed on this event: it alone is dead-lettered
                log.error("cannot judge event %d of %s[%s]@%s: %s", position, record.topic, record.partition,
                          record.offset, type(exc).__name__)
                out.append(self._dead_letter(record, "processing_error", f"{type(exc).__name__}: {exc}"[:500],
                                             decoded.index_of(position)))

    def count_events(self) -> None:
        """Add the events judged since the last call to `warden_events_total`: once per kind at each yield and at
        the end of a batch, not per message (a counter's inc takes a lock)."""
        for kind, n in self._kinds.items():
            _EVENTS_BY_KIND[kind].inc(n)
        self._kinds.clear()

    def dead_letter_whole(self, record: ConsumerRecord, exc: Exception) -> Outgoing:
        """A record whose judging failed outside any one event (a bug): the whole message to the DLQ."""
        return self._dead_letter(record, "processing_error", f"{type(exc).__name__}: {exc}"[:500], None)

    def _dead_letter(self, record: ConsumerRecord, code: str, reason: str, index: int | None) -> Outgoing:
        return dead_letter_record(self._settings, self._dlq_sealer, topic=record.topic, partition=record.partition,
                                  offset=record.offset, key=record.key, value=record.value, reason_code=code,
                                  reason=reason, index=index)

    def _seal(self, findings: list[Finding], event: ActivityEvent) -> list[Finding]:
        """A finding whose playbooks may revoke the event's token carries it sealed (never in clear on a topic)."""
        cred = event.credential
        if self._sealer is None or cred is None or cred.token is None:
            return findings
        token = cred.token.get_secret_value()
        return [f.model_copy(update={"credential": f.credential.model_copy(update={
                    "sealed_token": self._sealer.seal(token)})})
                if f.credential is not None else f for f in findings]


Send = Callable[[Outgoing], Awaitable[Awaitable[object]]]  # produce one record: its delivery to await


class Deliveries:
    """The records made since the last commit, on their way to the broker: each is sent as soon as it is made, so a
    finding is on its topic while the rest is judged, and every one is acknowledged before the checkpoint commits."""

    def __init__(self, send: Send) -> None:
        self.out: list[Outgoing] = []  # what the batch made, in order: the judge appends here
        self._send = send
        self._sent = 0  # how many of `out` were handed to the producer
        self._in_flight: list[tuple[Outgoing, Awaitable[object]]] = []
        self._refused: list[tuple[Outgoing, KafkaError]] = []

    async def send_new(self) -> None:
        """Hand the records made since the last call to the producer (each returns as soon as it is queued)."""
        if self._sent == len(self.out):  # most records make nothing
            return
        made, self._sent = self.out[self._sent:], len(self.out)
        await self._send_each(made)

    async def _send_each(self, records: list[Outgoing]) -> None:
        for o in records:
            try:
                self._in_flight.append((o, await self._send(o)))
            except KafkaError as exc:
                self._refused.append((o, exc))

    async def settle(self, delivered: Callable[[Outgoing], None], stopping: Callable[[], bool]) -> None:
        """Await every acknowledgement; the records not taken are sent again (only those) until they are, so the
        caller commits only a fully delivered batch. Raises `_Stopping` instead of waiting to retry when the
        worker stops: the batch then stays uncommitted."""
        await self.send_new()
        attempt = 0
        while True:
            failed = [o for o, _ in self._refused]
            last: BaseException | None = self._refused[-1][1] if self._refused else None
            in_flight, self._in_flight, self._refused = self._in_flight, [], []
            for o, delivery in in_flight:
                try:
                    await delivery
                except KafkaError as exc:
                    failed.append(o)
                    last = exc
                else:
                    delivered(o)
            if not failed:
                return
            attempt += 1
            metrics.PROCESSING_RETRIES.inc()
            log.error("%d of %d records of the batch were not delivered (%s: %s); sending them again in %.1fs, "
                      "the batch stays uncommitted until then", len(failed), len(self.out), type(last).__name__,
                      last, DELIVERY.delay(attempt))
            if stopping():
                raise _Stopping
            await asyncio.sleep(DELIVERY.delay(attempt))
            await self._send_each(failed)


class _Stopping(Exception):
    """The worker stops while a batch is still undelivered: it is left uncommitted, for the next owner."""


class BatchIngest(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """The worker's ingest loop and its consumer; the faust app starts and stops it (service.runtime.app)."""

    def __init__(self, settings: Settings, kafka: KafkaAccess | str, judge: BatchJudge,
                 limits: BatchLimits | None = None) -> None:
        self._settings = settings
        self._kafka = access(kafka)
        self.judge = judge
        self.limits = limits or BatchLimits()
        self.group = ingest_group(settings.app_id)
        self.topics = sorted(judge.states)
        self._lock = asyncio.Lock()  # held by the batch in flight; a revocation waits for it
        self._stopping = False
        self._joined = asyncio.Event()  # set at the first assignment
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._findings_children: dict[tuple[str, str, bool], Counter] = {}
        self._taken: dict[TopicPartition, int] = {}  # per partition, the offset after the last message taken
        self._committed: dict[TopicPartition, int] = {}  # per partition, what this worker committed last
        self._generation = 0  # counts assignments: records fetched before the latest one are not judged
        ticks = [h.release_every for h in judge.inputs.values() if h.release_every is not None]
        self._release_every = min(ticks) if ticks else None
        self._next_release = 0.0
        # what was judged since the last commit: its records in flight, its events, when the last commit was
        self._deliveries = Deliveries(self._send)
        self._unit_events = 0
        self._uncommitted = False  # some message was taken since the last commit
        self._checkpointed = time.monotonic()

    def provenance(self, agent_id: str, session_id: str | None) -> Known:
        """What this worker knows of a session's reads (the approval path): the session from whichever input
        partition holds it; else whether the agent's activity partition is this worker's at all (a partition of
        another worker holds reads this one never saw)."""
        for states in self.judge.states.values():
            found = states.provenance(agent_id, session_id)
            if found is not None:
                return Known(True, found)
        return Known(self.owns(self._settings.topic_activity, agent_id), None)

    def owns(self, topic: str, agent_id: str) -> bool:
        """Whether the partition that producers' default partitioner (murmur2 of the key) gives `agent_id` on `topic`
        is assigned to this worker."""
        consumer = self._consumer
        partitions = sorted(consumer.partitions_for_topic(topic) or ()) if consumer is not None else []
        if not partitions:
            return False
        index = (murmur2(agent_id.encode()) & 0x7FFFFFFF) % len(partitions)
        return TopicPartition(topic, partitions[index]) in self.assignment()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "start() first"
        return self._consumer

    @property
    def joined(self) -> bool:
        """Whether the consumer group gave this worker an assignment yet (possibly empty: more workers than
        partitions). Readiness reads it."""
        return self._joined.is_set()

    def assignment(self) -> set[TopicPartition]:
        """The input partitions this worker owns now (empty before start)."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    async def start(self) -> None:
        s = self._settings
        await seed_from_old_group(self._kafka, s.app_id, self.group, self.topics)
        fetch_bytes = max(8 * 1024 * 1024, 2 * s.max_message_bytes)
        self._producer = self._kafka.producer(acks="all", linger_ms=2,
                                              max_request_size=s.dlq_max_bytes + DLQ_HEADER_ROOM,
                                              max_batch_size=1 << 20)
        await self._producer.start()
        self._consumer = self._kafka.consumer(
            group_id=self.group, enable_auto_commit=False,
            group_instance_id=s.kafka_group_instance_id,
            auto_offset_reset="earliest", max_partition_fetch_bytes=fetch_bytes, fetch_max_bytes=4 * fetch_bytes,
            fetch_max_wait_ms=self.limits.fetch_wait_ms,
            session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.kafka_heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(s.kafka_rebalance_timeout_s * 1000),
            # Range first: a worker gets the same partition numbers of every input topic, so a trace's spans and its
            # GenAI log records (both keyed by trace id, on topics of equal partition counts) meet in one worker's
            # resolver. Round robin, the old default, stays listed: a group mid-upgrade agrees on it until every
            # member offers range.
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
        )
        await self._consumer.start()
        self._consumer.subscribe(self.topics, listener=self)
        self._task = asyncio.create_task(self._run(), name="warden-ingest")
        # Up means in the group: a worker started right after another must not look up before it has joined.
        joining = s.kafka_session_timeout_s + s.kafka_rebalance_timeout_s
        try:
            await asyncio.wait_for(self._joined.wait(), joining)
        except TimeoutError:
            log.warning("the ingest consumer has not joined its group %s after %.0fs; it keeps trying", self.group,
                        joining)

    async def stop(self) -> None:
        """Finish and commit the batch in flight (unless it cannot be delivered), then leave the group."""
        self._stopping = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _run(self) -> None:
        consumer = self.consumer
        # getmany returns at the latest after this, so held events are released on time when nothing comes in
        wait_ms = 200 if self._release_every is None else min(200, int(self._release_every * 1000))
        while not self._stopping:
            wait = wait_ms
            if self._uncommitted:  # what was judged is committed on time even when nothing more comes in
                due_s = self._checkpointed + self.limits.commit_every_s - time.monotonic()
                wait = max(0, min(wait_ms, int(due_s * 1000)))
            try:
                fetched = await consumer.getmany(timeout_ms=wait, max_records=self.limits.max_records)
            except KafkaError as exc:
                log.warning("fetch failed (%s: %s); fetching again", type(exc).__name__, exc)
                await asyncio.sleep(0.5)
                continue
            feed = _Feed(consumer, fetched, self.limits.max_records, self._generation)
            try:
                more = True
                while more and not self._stopping:
                    more = await self._one_batch(feed)
                    if self._release_every is not None and time.monotonic() >= self._next_release:
                        self._next_release = time.monotonic() + self._release_every
                        await self._release()
            except _Stopping:
                return
            except Exception:  # a bug or an unexpected error: never end the loop, never skip what was not committed
                log.exception("an ingest batch failed; reading again from the committed offsets")
                await self._start_over()
        async with self._lock:  # stopping: what was judged is delivered and committed (unless it cannot be)
            try:
                await self._checkpoint()
            except _Stopping:
                return

    async def _start_over(self) -> None:
        """Forget the detector state (it may hold events whose findings were never delivered; it is rebuilt from
        the log below the committed offset) and read every owned partition again from its committed offset."""
        async with self._lock:
            self._deliveries = Deliveries(self._send)  # not committed: read and produced again from the offsets
            self._unit_events = 0
            self._uncommitted = False
            for states in self.judge.states.values():
                states.on_assigned(())
            for topic, handler in self.judge.inputs.items():
                handler.forget(tp.partition for tp in self.consumer.assignment() if tp.topic == topic)
            self._taken.clear()
            self._committed.clear()
            self._generation += 1
            consumer = self.consumer
            while not self._stopping:
                try:
                    for tp in consumer.assignment():
                        committed = await consumer.committed(tp)
                        if committed is None:  # nothing committed yet: the group starts at the beginning (earliest)
                            await consumer.seek_to_beginning(tp)
                        else:
                            consumer.seek(tp, committed)
                    break
                except KafkaError as exc:
                    log.warning("cannot go back to the committed offsets (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(0.5)

    async def _one_batch(self, feed: _Feed) -> bool:
        """Judge the feed's records until it runs dry or `max_events` are judged since the last commit; then
        deliver and commit them if that many are, or the last commit is `commit_every_s` old, or the feed held
        nothing. False when the feed is used up.

        Each finding and dead letter is sent as soon as it is made; the commit waits for their acknowledgements.
        Between two commits, the worker judges on while they are in flight, instead of waiting for them after each
        fetch (a few milliseconds each time, most of a small batch's time)."""
        limits = self.limits
        offsets: dict[TopicPartition, int] = {}
        events = since_yield = 0
        more = True
        async with self._lock:
            started = time.perf_counter()
            owned = self.consumer.assignment()
            deliveries = self._deliveries
            while self._unit_events + events < limits.max_events:
                # used up, or a rebalance since the fetch: read again from the committed offsets
                record = await feed.next() if feed.generation == self._generation else None
                if record is None:
                    more = False
                    break
                tp = TopicPartition(record.topic, record.partition)
                if tp not in owned:  # revoked since it was fetched: its new owner reads it from the committed offset
                    continue
                try:
                    n = await self.judge.judge(record, deliveries.out)
                except Exception as exc:  # noqa: BLE001 - never let one message stop the loop: it goes to the DLQ
                    log.error("cannot judge %s[%s]@%s: %s", record.topic, record.partition, record.offset,
                              type(exc).__name__)
                    deliveries.out.append(self.judge.dead_letter_whole(record, exc))
                    n = 0
                await deliveries.send_new()
                offsets[tp] = record.offset + 1
                events += n
                since_yield += n
                if since_yield >= limits.yield_every:
                    since_yield = 0
                    self.judge.count_events()  # what is read while the loop yields is at most yield_every behind
                    await asyncio.sleep(0)
            self.judge.count_events()
            self._taken.update(offsets)
            self._unit_events += events
            self._uncommitted |= bool(offsets)
            if offsets:
                metrics.DETECT_SECONDS.observe(time.perf_counter() - started)
            if (self._unit_events >= limits.max_events or not offsets
                    or time.monotonic() - self._checkpointed >= limits.commit_every_s):
                await self._checkpoint()
        await asyncio.sleep(0)  # let a waiting revocation in between batches
        return more

    async def _release(self) -> None:
        """Judge the held events whose wait is over, deliver them, then commit what their release frees."""
        async with self._lock:
            self.judge.release(self._deliveries.out)
            self.judge.count_events()
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        """Await the acknowledgement of every record made since the last commit, then commit what they came from
        (the caller holds the lock)."""
        deliveries, self._deliveries = self._deliveries, Deliveries(self._send)
        self._unit_events = 0
        self._uncommitted = False
        self._checkpointed = time.monotonic()
        await self._settle(deliveries)
        await self._commit(self._commit_positions())
        # The young generation, collected here: the detectors' state, once full, frees an old entry for each new
        # one, which leaves CPython's allocation count flat, so the young generation grows unseen until some
        # collection walks all of it (measured: 200k window entries, one 80 ms pause). Here it holds what was
        # judged since the last commit, a few milliseconds' walk.
        gc.collect(0)

    def _commit_positions(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last message taken, capped at its lowest held offset (a held event
        is never committed past: a crash delivers its message again); only those that moved since the last commit."""
        moved: dict[TopicPartition, int] = {}
        for tp, taken in self._taken.items():
            held = self.judge.inputs[tp.topic].lowest_held(tp.partition)
            position = taken if held is None else min(taken, held)
            if position > self._committed.get(tp, -1):
                moved[tp] = position
        return moved

    async def _send(self, o: Outgoing) -> Awaitable[object]:
        assert self._producer is not None, "start() first"
        delivery: Awaitable[object] = await self._producer.send(o.topic, o.value, key=o.key, headers=o.headers)
        return delivery

    async def _settle(self, deliveries: Deliveries) -> None:
        await deliveries.settle(self._count, lambda: self._stopping)

    def _count(self, o: Outgoing) -> None:
        f = o.finding
        if f is None:
            metrics.INVALID.labels(reason=o.reason_code or "unknown").inc()
            return
        key = (f.rule, f.severity.value, f.shadow)
        child = self._findings_children.get(key)
        if child is None:
            child = self._findings_children[key] = metrics.FINDINGS.labels(
                rule=f.rule, severity=f.severity.value, shadow=str(f.shadow).lower())
        child.inc()
        metrics.DETECTION_SECONDS.observe(max(0.0, (datetime.now(UTC) - f.ts).total_seconds()))

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the batch; a commit refused by a rebalance is not fatal: the new owner re-reads the batch and
        produces the same findings again (same ids), which the responder dedups."""
        if not offsets:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            metrics.INGEST_COMMIT_FAILURES.inc()
            log.warning("commit of %s refused (%s): the batch will be read again by the partitions' owner",
                        sorted((tp.partition, o) for tp, o in offsets.items()), type(exc).__name__)

    # aiokafka's rebalance listener -------------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """A rebalance starts: the batch in flight is finished first (it holds the lock), then what was judged
        since the last commit is delivered and committed."""
        async with self._lock:
            with contextlib.suppress(_Stopping):  # the worker stops and cannot deliver: left for the next owner
                await self._checkpoint()
            for states in self.judge.states.values():
                states.on_revoked()
            for topic, handler in self.judge.inputs.items():  # held events: their messages are read again
                handler.forget(tp.partition for tp in revoked if tp.topic == topic)
            self._taken.clear()
            self._committed.clear()
            self._generation += 1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """The new assignment: the state of a partition that moved away is dropped (its new owner rebuilds it)."""
        for topic, states in self.judge.states.items():
            states.on_assigned((tp.topic, tp.partition) for tp in assigned if tp.topic == topic)
        self._joined.set()


class _Feed:
    """The records of one fetch and then, while a batch has room, what the consumer has buffered since: a fetch
    returns at most `max_records` messages, a batch is bounded in events (500 single-event messages are only 500)."""

    def __init__(self, consumer: AIOKafkaConsumer, fetched: Mapping[TopicPartition, list[ConsumerRecord]],
                 max_records: int, generation: int) -> None:
        self._consumer = consumer
        self._records = _records(fetched)
        self._max_records = max_records
        self.generation = generation  # the worker's assignment count at the first fetch

    async def next(self) -> ConsumerRecord | None:
        """The next record, or None when neither the fetch nor the consumer's buffer holds one more."""
        record = next(self._records, None)
        if record is not None:
            return record
        try:  # no wait: only what is buffered already
            fetched = await self._consumer.getmany(timeout_ms=0, max_records=self._max_records)
        except KafkaError:
            return None
        self._records = _records(fetched)
        return next(self._records, None)


def _records(fetched: Mapping[TopicPartition, list[ConsumerRecord]]) -> Iterator[ConsumerRecord]:
    for records in fetched.values():
        yield from records


async def seed_from_old_group(kafka: KafkaAccess | str, old_group: str, new_group: str, topics: list[str]) -> dict[
        TopicPartition, int]:
    """The cut-over from the faust agent: on each partition of `topics` where `new_group` has committed nothing,
    commit `old_group`'s offset there into it, so nothing is re-read or skipped. Per partition, because an input
    topic may move over later than the others (the span topic did). Returns what it seeded (nothing on later
    starts: every partition the old group committed on then has an offset of the new group's)."""
    kafka = access(kafka)
    admin = kafka.admin()
    await admin.start()
    try:
        partitions = sorted(TopicPartition(d["topic"], p["partition"]) for d in await admin.describe_topics(topics)
                            for p in d.get("partitions") or ())
        missing = [tp for tp, o in (await _committed(admin, new_group, partitions)).items() if o < 0]
        if not missing:
            return {}
        theirs = {tp: o for tp, o in (await _committed(admin, old_group, missing)).items() if o >= 0}
    finally:
        await admin.close()
    if theirs:
        consumer = kafka.consumer(group_id=new_group, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(theirs))  # a manual assignment commits without joining the group
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in theirs.items()})
        finally:
            await consumer.stop()
        log.warning("seeded the ingest group %s from %s's committed offsets on %s: %s", new_group, old_group,
                    ", ".join(topics), {f"{tp.topic}[{tp.partition}]": o for tp, o in sorted(theirs.items())})
    return theirs


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError) and bool(exc.retriable)


# A group's coordinator may not be there yet on a fresh Apache Kafka (its offsets topic is made on first use): this
# runs at start, alongside the app's group join, before any consumer of the worker has found a coordinator.
@stamina.retry(on=_retriable, attempts=30, timeout=30.0, wait_initial=0.1, wait_max=2.0)
async def _committed(admin: AIOKafkaAdminClient, group: str, partitions: list[TopicPartition]
                     ) -> dict[TopicPartition, int]:
    """A group's committed offset per partition (-1: none). Named partitions: Tansu cannot answer for all."""
    got = await admin.list_consumer_group_offsets(group, partitions=partitions)
    return {tp: got[tp].offset if tp in got else -1 for tp in partitions}
