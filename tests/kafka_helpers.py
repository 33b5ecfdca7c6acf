"""Produce to and read back from real topics in tests (aiokafka against Tansu or Apache Kafka)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Send (key, value) pairs and wait for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024)
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
    bootstrap: str, topic: str, expect: int, timeout: float = 30.0, settle: float = 0.0
) -> list[ConsumerRecord]:
    """Read a topic from the beginning until `expect` records arrived (then `settle` more seconds) or timeout."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
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
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= expect and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return records


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    [described] = await admin.describe_topics([topic])
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert partitions, f"topic {topic} has no partitions: {described}"
    return sorted(partitions)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's high watermark as the broker reports it (ListOffsets latest), by partition number."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = await _partitions(admin, topic)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.partition: offset for tp, offset in sorted((await consumer.end_offsets(partitions)).items())}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on `topic` as the broker stores them, by partition (absent: never committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
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
