"""Read one topic's records in a window of record time, once, for `warden policy learn --since/--until`.

No consumer group: the partitions are assigned, nothing is committed, and nobody else's position moves. The
connection is the workers' own (`KafkaAccess`: bootstrap, TLS, SASL). Each partition is read whole before the
next, in partition order, so the same topic gives the records in the same order (the learner's caps keep what
comes first).

Where a partition starts: the first offset whose record time is at or after `since` (ListOffsets by timestamp,
`offsets_for_times`). A broker that cannot seek by time (Tansu answers offset 0 with the first record's time, or
-1, whatever the time asked; Kafka never answers a record older than the time asked) is read from the beginning,
and the records older than `since` are skipped by their time without being handed on. Where it stops: the first
offset at or after `until` when the broker can say so, else the high-water mark taken at the start (so a topic
still being written to is read up to where it stood, never followed); a fetch's own high-water mark raises that
end once, because Tansu's ListOffsets counts its newest batch as one record. Records outside [since, until) by
their time are counted, never handed on.

Bounded: connecting, each metadata or offsets request, and every stretch of fetching without a record have
`timeout_s`. A partition that stops short of its end (the broker went away, a gap it will not serve) raises
`WindowIncomplete` naming where it stopped: the caller must not present what it read as the window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndTimestamp

from service.runtime.kafka_access import KafkaAccess, access, connect_reasons, explain

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 15.0
MAX_RECORDS = 500  # per fetch: what is held at once is bounded by this and the fetch sizes, not the window


class WindowUnreachable(RuntimeError):
    """The broker cannot be reached, or does not answer within the timeout (names the bootstrap and why)."""


class NoSuchTopic(RuntimeError):
    """The broker answered and has no topic of that name (or this client may not see it)."""


class WindowIncomplete(RuntimeError):
    """Reading stopped before the end of the window: what was read is not the window."""

    def __init__(self, message: str, read: WindowRead) -> None:
        super().__init__(message)
        self.read = read


@dataclass
class PartitionRead:
    """One partition's part of the window: the offsets read, and what its records were."""

    partition: int
    start: int  # first offset read
    end: int  # first offset not read
    log_start: int  # the partition's first offset kept by the broker
    by_time: bool  # the start was found by record time (False: the broker cannot seek by time; read from the start)
    end_by_time: bool = False  # the end is the first record at or after until (else the high-water mark)
    records: int = 0  # in the window, handed on
    before: int = 0  # read, but older than since
    after: int = 0  # read, but at or after until
    position: int | None = None  # where reading stopped

    @property
    def maybe_deleted(self) -> bool:
        """The window starts at the oldest record the broker keeps, and older ones were deleted (retention): the
        window may reach back further than the topic."""
        return self.by_time and self.log_start > 0 and self.start == self.log_start

    def as_dict(self) -> dict[str, object]:
        return {"partition": self.partition, "start": self.start, "end": self.end, "log_start": self.log_start,
                "maybe_deleted": self.maybe_deleted, "by_time": self.by_time, "end_by_time": self.end_by_time,
                "records": self.records, "before": self.before, "after": self.after}


@dataclass
class WindowRead:
    """What was read of the topic in [since_ms, until_ms): every partition, in order."""

    topic: str
    bootstrap: str
    since_ms: int
    until_ms: int | None  # None: up to the high-water marks taken at the start
    partitions: list[PartitionRead] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    @property
    def skipped(self) -> int:
        """Records read but outside the window by their time."""
        return sum(p.before + p.after for p in self.partitions)


async def read_window(kafka: KafkaAccess | str, topic: str, since_ms: int, until_ms: int | None,
                      on_record: Callable[[ConsumerRecord], None], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                      max_message_bytes: int = 1 << 20) -> WindowRead:
    """Hand every record of `topic` whose time is in [since_ms, until_ms) to `on_record`, partition by partition,
    and say what was read. Raises WindowUnreachable, NoSuchTopic or WindowIncomplete; never commits anything."""
    kafka = access(kafka)
    started = time.perf_counter()
    out = WindowRead(topic, kafka.bootstrap, since_ms, until_ms)
    fetch_bytes = max(8 * 1024 * 1024, 2 * max_message_bytes)  # a message at the worker's limit always fits
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False, auto_offset_reset="none",
                              request_timeout_ms=int(timeout_s * 1000) + 1000, fetch_max_wait_ms=200,
                              max_partition_fetch_bytes=fetch_bytes, fetch_max_bytes=fetch_bytes)
    with connect_reasons() as reasons:
        try:
            numbers = await _partitions(kafka, topic, timeout_s)  # the first connection: a wrong address ends here
            await asyncio.wait_for(consumer.start(), timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            await _stop(consumer)
            why = explain(reasons) or " ".join(str(exc).split()) or f"no answer within {timeout_s:g}s"
            raise WindowUnreachable(f"cannot reach Kafka at {kafka.bootstrap} (WARDEN_KAFKA_BOOTSTRAP, "
                                    f"WARDEN_KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}): {why}") from None
        except NoSuchTopic:
            await _stop(consumer)
            raise
    try:
        partitions = await _plan(consumer, out, numbers, timeout_s)
        for tp in partitions:
            try:
                await _read_partition(consumer, tp, out, on_record, timeout_s)
            except OffsetOutOfRangeError:
                part = next(p for p in out.partitions if p.partition == tp.partition)
                raise WindowIncomplete(f"{topic} partition {tp.partition}: offset {part.position} was deleted (the "
                                       "topic's retention) while the window was read", out) from None
    except (TimeoutError, KafkaError, OSError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise WindowUnreachable(f"Kafka at {kafka.bootstrap} stopped answering while {topic} was read: "
                                f"{why}") from None
    finally:
        out.seconds = time.perf_counter() - started
        await _stop(consumer)
    return out


async def _stop(consumer: AIOKafkaConsumer) -> None:
    """Stop the consumer, whatever state the broker left it in: aiokafka 0.14 lets a CancelledError of its own fetch
    task out of `stop()` when the broker went away, which would hide the reason the read failed."""
    try:
        await consumer.stop()
    except (asyncio.CancelledError, KafkaError, OSError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # this task is being cancelled: never swallow that
            raise


async def _bounded(call: Awaitable[T], timeout_s: float) -> T:
    return await asyncio.wait_for(call, timeout_s)


async def _partitions(kafka: KafkaAccess, topic: str, timeout_s: float) -> list[int]:
    """The topic's partition numbers, from the broker's metadata (NoSuchTopic when it has none). Listed before it
    is described: a metadata request naming a topic creates it on a broker that auto-creates topics."""
    admin = kafka.admin(request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        described = (await asyncio.wait_for(admin.describe_topics([topic]), timeout_s)
                     if topic in await asyncio.wait_for(admin.list_topics(), timeout_s) else [])
    finally:
        await admin.close()
    numbers = sorted(p["partition"] for d in described if d.get("topic") == topic and not d.get("error_code")
                     for p in d.get("partitions") or ())
    if not numbers:
        raise NoSuchTopic(f"Kafka at {kafka.bootstrap} has no topic {topic} (WARDEN_TOPIC_ACTIVITY), or this client "
                          "may not describe it")
    return numbers


async def _plan(consumer: AIOKafkaConsumer, out: WindowRead, numbers: list[int], timeout_s: float
                ) -> list[TopicPartition]:
    """Each partition's first and last offset to read, in `out.partitions`; the ones with anything to read."""
    tps = [TopicPartition(out.topic, p) for p in numbers]
    consumer.assign(tps)
    consumer.pause(*tps)
    earliest = await _bounded(consumer.beginning_offsets(tps), timeout_s)
    latest = await _bounded(consumer.end_offsets(tps), timeout_s)
    at_since = await _bounded(consumer.offsets_for_times(dict.fromkeys(tps, out.since_ms)), timeout_s)
    bounded_by_time = out.until_ms is not None and out.until_ms <= int(time.time() * 1000)
    at_until = (await _bounded(consumer.offsets_for_times(dict.fromkeys(tps, out.until_ms)), timeout_s)
                if bounded_by_time else {})
    todo: list[TopicPartition] = []
    for tp in tps:
        found, stop = at_since.get(tp), at_until.get(tp)
        by_time = await _agrees(consumer, tp, found, out.since_ms, timeout_s)
        end_by_time = by_time and stop is not None and await _agrees(consumer, tp, stop, out.until_ms, timeout_s)
        # Not by time: read it all, and keep to the window by each record's own time. No record that recent
        # (None): nothing to read.
        start = earliest[tp] if not by_time else latest[tp] if found is None else max(found.offset, earliest[tp])
        end = min(latest[tp], stop.offset) if end_by_time and stop is not None else latest[tp]
        part = PartitionRead(tp.partition, start, max(start, end), earliest[tp], by_time, end_by_time)
        out.partitions.append(part)
        if part.end > part.start:
            todo.append(tp)
    return todo


async def _agrees(consumer: AIOKafkaConsumer, tp: TopicPartition, found: OffsetAndTimestamp | None, asked: int | None,
                  timeout_s: float) -> bool:
    """Whether the broker's answer to "the first offset at or after `asked`" can be trusted: Kafka answers the
    offset and time of that very record. A broker whose answer is older than asked, or -1 (it cannot seek by time),
    or whose time is not the record's (Tansu seeks by the time it appended a record, not the record's own time,
    which a producer may set), is not trusted. No answer (None: no record that recent) is trusted."""
    if found is None:
        return True
    if asked is None or found.timestamp < asked:
        return False
    consumer.seek(tp, found.offset)
    consumer.resume(tp)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp)
            if records:
                return bool(records[0].offset == found.offset and records[0].timestamp == found.timestamp)
        raise TimeoutError(f"{tp.topic} partition {tp.partition}: offset {found.offset}, which the broker named for "
                           f"time {asked}, could not be fetched within {timeout_s:g}s")
    finally:
        consumer.pause(tp)


async def _read_partition(consumer: AIOKafkaConsumer, tp: TopicPartition, out: WindowRead,
                          on_record: Callable[[ConsumerRecord], None], timeout_s: float) -> None:
    part = next(p for p in out.partitions if p.partition == tp.partition)
    # An end that is the high-water mark may move up once, on the first fetch: Tansu's ListOffsets counts its
    # newest batch as one record, its fetch answers the right mark. One found by time stays.
    may_raise_end = not part.end_by_time
    part.position = part.start
    consumer.seek(tp, part.start)
    consumer.resume(tp)
    quiet_since = time.monotonic()
    until = out.until_ms
    while part.position < part.end:
        batch = await consumer.getmany(tp, timeout_ms=500, max_records=MAX_RECORDS)
        if may_raise_end:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                part.end, may_raise_end = max(part.end, highwater), False
        records = batch.get(tp, [])
        for record in records:
            if record.offset >= part.end:
                break
            if record.timestamp < out.since_ms:
                part.before += 1
            elif until is not None and record.timestamp >= until:
                part.after += 1
            else:
                part.records += 1
                on_record(record)
        part.position = await consumer.position(tp)
        if records:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > timeout_s:
            raise WindowIncomplete(f"{out.topic} partition {tp.partition}: reading stopped at offset {part.position} "
                                   f"of {part.end} (nothing fetched for {timeout_s:g}s from Kafka at "
                                   f"{out.bootstrap})", out)
    consumer.pause(tp)
