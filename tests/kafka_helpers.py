"""Produce to and read back from real topics in tests (aiokafka against Tansu or Apache Kafka)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord


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
