"""The worker's ingest loop: fetch, judge and deliver in bounded batches, checkpoint, and follow the consumer
group's rebalances (the package docstring tells the whole path)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from service.runtime.ingest.checkpoint import Checkpoint
from service.runtime.ingest.clients import ingest_consumer, ingest_group, ingest_producer
from service.runtime.ingest.dead_letters import Outgoing
from service.runtime.ingest.deliveries import Deliveries, Stopping
from service.runtime.ingest.feed import BatchLimits, Feed, default_partition, fetch, rewind
from service.runtime.ingest.judge import BatchJudge
from service.runtime.ingest.positions import Positions
from service.runtime.kafka_access import KafkaAccess, access
from service.runtime.settings import Settings
from streams.ingest import ACTIVITY
from streams.verdict import Known
from warden.telemetry import metrics

log = logging.getLogger("warden.ingest")


class BatchIngest(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """The worker's ingest loop and its consumer; the faust app starts and stops it (service.runtime.app)."""

    def __init__(self, settings: Settings, kafka: KafkaAccess | str, judge: BatchJudge,
                 limits: BatchLimits | None = None, checkpoint: Checkpoint | None = None) -> None:
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
        self.checkpoint = checkpoint or Checkpoint()  # settles and commits each batch
        self._positions = Positions(judge.inputs)
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
        partition holds it; else whether the agent's activity partition (producers' default partitioner) is this
        worker's at all (a partition of another worker holds reads this one never saw)."""
        for states in self.judge.states.values():
            found = states.provenance(agent_id, session_id)
            if found is not None:
                return Known(True, found)
        topic = self._settings.input_topic(ACTIVITY)
        partitions = self._consumer.partitions_for_topic(topic) if self._consumer is not None else None
        return Known(TopicPartition(topic, default_partition(agent_id, partitions or ())) in self.assignment(), None)

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
        self._producer = ingest_producer(self._kafka, s)
        await self._producer.start()
        self._consumer = ingest_consumer(self._kafka, s, self.limits.fetch_wait_ms)
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
            fetched = await fetch(consumer, wait, self.limits.max_records)
            if fetched is None:
                continue
            feed = Feed(consumer, fetched, self.limits.max_records, self._generation)
            try:
                more = True
                while more and not self._stopping:
                    more = await self._one_batch(feed)
                    if self._release_every is not None and time.monotonic() >= self._next_release:
                        self._next_release = time.monotonic() + self._release_every
                        await self._release()
            except Stopping:
                return
            except Exception:  # a bug or an unexpected error: never end the loop, never skip what was not committed
                log.exception("an ingest batch failed; reading again from the committed offsets")
                await self._start_over()
        async with self._lock:  # stopping: what was judged is delivered and committed (unless it cannot be)
            with contextlib.suppress(Stopping):
                await self._checkpoint()

    async def _start_over(self) -> None:
        """Forget the detector state (it may hold events whose findings were never delivered; it is rebuilt from
        the log below the committed offset) and read every owned partition again from its committed offset."""
        async with self._lock:
            self._deliveries = Deliveries(self._send)  # not committed: read and produced again from the offsets
            self._unit_events = 0
            self._uncommitted = False
            for states in self.judge.states.values():
                states.on_assigned(())
            self._forget(self.consumer.assignment())
            await rewind(self.consumer, lambda: self._stopping)

    async def _one_batch(self, feed: Feed) -> bool:
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
            self._positions.taken(offsets)
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
        await self.checkpoint.settle(deliveries, lambda: self._stopping)
        offsets = self._positions.to_commit()
        if offsets and await self.checkpoint.commit(self.consumer, offsets):
            self._positions.committed(offsets)
        # The young generation, collected here: the detectors' state, once full, frees an old entry for each new
        # one, which leaves CPython's allocation count flat, so the young generation grows unseen until some
        # collection walks all of it (measured: 200k window entries, one 80 ms pause). Here it holds what was
        # judged since the last commit, a few milliseconds' walk.
        gc.collect(0)

    async def _send(self, o: Outgoing) -> Awaitable[object]:
        assert self._producer is not None, "start() first"
        delivery: Awaitable[object] = await self._producer.send(o.topic, o.value, key=o.key, headers=o.headers)
        return delivery

    # aiokafka's rebalance listener -------------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """A rebalance starts: the batch in flight is finished first (it holds the lock), then what was judged
        since the last commit is delivered and committed."""
        async with self._lock:
            with contextlib.suppress(Stopping):  # the worker stops and cannot deliver: left for the next owner
                await self._checkpoint()
            for states in self.judge.states.values():
                states.on_revoked()
            self._forget(revoked)

    def _forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is held from `partitions` and every position: their messages are read again, and records
        fetched before now are not judged."""
        gone = list(partitions)
        for topic, handler in self.judge.inputs.items():
            handler.forget(tp.partition for tp in gone if tp.topic == topic)
        self._positions.clear()
        self._generation += 1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """The new assignment: the state of a partition that moved away is dropped (its new owner rebuilds it)."""
        for topic, states in self.judge.states.items():
            states.on_assigned((tp.topic, tp.partition) for tp in assigned if tp.topic == topic)
        self._joined.set()

