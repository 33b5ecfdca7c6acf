"""Produce to and read back from real topics in tests (aiokafka against Tansu or Apache Kafka, secured too: with
WARDEN_TEST_KAFKA_SECURITY set, every client here connects as the workers do, through warden's KafkaAccess)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.kafka_security import kafka_access


def _secured(bootstrap: str) -> dict[str, Any]:
    """aiokafka's connection keywords for the test broker (with its TLS and SASL when it is the secured one)."""
    return kafka_access(bootstrap).client_options()


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Send (key, value) pairs and wait for every ack."""
    producer = AIOKafkaProducer(**_secured(bootstrap), max_request_size=16 * 1024 * 1024)
    await producer.start()
    n = 0
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        for f in futures:
            await f
            n += 1
    finally:
        await producer.stop()
    return n


async def produce_events(bootstrap: str, topic: str, events: Iterable[dict[str, Any]]) -> int:
    """Send native events as single-event messages keyed by agent id, as producers must."""
    return await produce(bootstrap, topic, ((e["agent"]["id"].encode(), json.dumps(e).encode()) for e in events))


async def read_topic(
    bootstrap: str, topic: str, expect: int | None = None, *,
    until: Callable[[list[ConsumerRecord]], bool] | None = None, what: str = "", timeout: float = 30.0,
) -> list[ConsumerRecord]:
    """Read `topic` from the beginning until `expect` records arrived or `until(records)` holds, and fail, saying
    what was missing and what was read, if neither happens within `timeout`.

    A count alone never shows that nothing more is coming. For that, send an end marker behind the records under
    test, keyed like them so that it lands behind them on their partition, and read `until` it arrives."""
    assert (expect is None) != (until is None), "read until a count or until an end marker, not both"
    done = until or (lambda records: len(records) >= (expect or 0))
    consumer = AIOKafkaConsumer(
        topic,
        **_secured(bootstrap),
        group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() >= deadline:
                wanted = what or (f"{expect} records" if expect is not None else "the end marker")
                raise AssertionError(f"{topic}: timed out after {timeout}s waiting for {wanted}; read "
                                     f"{len(records)}: {[(r.partition, r.key) for r in records][:20]}")
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return records


async def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0) -> list[ConsumerRecord]:
    """Every record up to each partition's high watermark: the end marker of a topic nothing writes to any more.
    Only on a broker whose high watermark is right (Apache Kafka, not Tansu) and on a topic with no gaps (no
    transactions, no compaction)."""
    ends = await end_offsets(bootstrap, topic)

    def at_end(records: list[ConsumerRecord]) -> bool:
        read = Counter(r.partition for r in records)
        return all(read[p] >= end for p, end in ends.items())

    return await read_topic(bootstrap, topic, until=at_end, what=f"every record up to the end offsets {ends}",
                            timeout=timeout)


def has_marker(event_ids: Iterable[str], open_value: Callable[[bytes], bytes] | None = None
               ) -> Callable[[list[ConsumerRecord]], bool]:
    """An `until` for read_topic: every one of these events' findings (or dead letters) has arrived. Dead letters
    are sealed: pass `open_value` (the worker's `Settings.sealer().open_bytes`) to read them."""
    wanted = set(event_ids)

    def arrived(records: list[ConsumerRecord]) -> bool:
        return wanted <= {_event_id(r, open_value) for r in records}

    return arrived


def _event_id(record: ConsumerRecord, open_value: Callable[[bytes], bytes] | None = None) -> str | None:
    """The event id a finding or a dead letter carries, if its value is a JSON object that names one."""
    try:
        value = json.loads(open_value(record.value) if open_value else record.value)
    except (ValueError, RecursionError):  # a dead letter may be hostile bytes, nested beyond the parser's depth
        return None
    return value.get("event_id") if isinstance(value, dict) else None


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    [described] = await admin.describe_topics([topic])
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert partitions, f"topic {topic} has no partitions: {described}"
    return sorted(partitions)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's high watermark as the broker reports it (ListOffsets latest), by partition number."""
    admin = AIOKafkaAdminClient(**_secured(bootstrap))
    await admin.start()
    try:
        partitions = await _partitions(admin, topic)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**_secured(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.partition: offset for tp, offset in sorted((await consumer.end_offsets(partitions)).items())}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on `topic` as the broker stores them, by partition (absent: never committed)."""
    admin = AIOKafkaAdminClient(**_secured(bootstrap))
    await admin.start()
    try:  # named partitions: Tansu cannot answer an OffsetFetch for all of a group's partitions
        offsets = await admin.list_consumer_group_offsets(group, partitions=await _partitions(admin, topic))
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Consumer lag per partition: the broker's high watermark minus the group's committed offset (0 if none)."""
    ends = await end_offsets(bootstrap, topic)
    committed = await committed_offsets(bootstrap, group, topic)
    return {p: end - committed.get(p, 0) for p, end in ends.items()}


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in (record.headers or ())}


def event(agent: str, kind: str = "tool_call", **fields: Any) -> dict[str, Any]:
    """A valid native event with a fresh id; override any field by keyword."""
    base: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "ts": "2026-11-21T10:00:00Z",
        "kind": kind,
        "agent": {"id": agent},
    }
    base.update(fields)
    return base


async def produce_each(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> dict[int, int]:
    """Send each event keyed by agent; the offset after the last one per partition (Tansu's end offsets are
    wrong, so the test counts them itself)."""
    producer = AIOKafkaProducer(**_secured(bootstrap))
    await producer.start()
    try:
        after: dict[int, int] = {}
        for ev in events:
            meta = await producer.send_and_wait(topic, json.dumps(ev).encode(), key=ev["agent"]["id"].encode())
            after[meta.partition] = meta.offset + 1
        return after
    finally:
        await producer.stop()
