"""The worker's view of `warden.control`: which agents are quarantined now, for the quarantine_breach detector.

Every worker reads the whole compacted topic (every partition, no consumer group, from the beginning) as gateways
do, so the view is the same on all of them whichever partitions of the activity topic they own. The latest
record per agent wins; `released` (or a tombstone) lifts the quarantine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from service.runtime.kafka_access import KafkaAccess, access
from warden.contract.containment import QuarantineMark
from warden.telemetry import metrics

log = logging.getLogger("warden.control")


def read_mark(key: bytes | None, value: bytes | None) -> tuple[str, QuarantineMark | None] | None:
    """(agent id, its mark or None when released) from one control record; None for a record that is not one."""
    if key is None:
        return None
    agent_id = key.decode("utf-8", "replace")
    if value is None:
        return agent_id, None
    try:
        record = json.loads(value)
        if record.get("state") != "quarantined":
            return agent_id, None
        return agent_id, QuarantineMark(agent_id=agent_id, since=datetime.fromisoformat(record["at"]),
                                        incident_id=record.get("incident_id"))
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("ignoring a control record for agent %r that is not Warden's format", agent_id[:200])
        return None


class ControlView:
    """`agents`: agent id → mark, updated as records arrive. Shared, read-only, with every detector state."""

    def __init__(self, kafka: KafkaAccess | str, topic: str) -> None:
        self.kafka, self.topic = access(kafka), topic
        self.agents: dict[str, QuarantineMark] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        partitions = await self._partitions()
        consumer = self.kafka.consumer(group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        self._consumer = consumer
        consumer.assign([TopicPartition(self.topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._follow(consumer), name="warden.control")

    async def _partitions(self) -> list[int]:
        """The topic's partitions, from the broker's metadata for that topic (created just before start)."""
        admin = self.kafka.admin()
        await admin.start()
        try:
            for _ in range(50):
                for topic in await admin.describe_topics([self.topic]):
                    partitions = sorted(p["partition"] for p in topic.get("partitions", []))
                    if topic.get("topic") == self.topic and partitions:
                        return partitions
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
        raise RuntimeError(f"topic {self.topic} has no partitions in the broker's metadata")

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            except KafkaError as exc:
                log.warning("reading %s failed (%s); retrying", self.topic, type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self.apply(record.key, record.value)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        read = read_mark(key, value)
        if read is None:
            return
        agent_id, mark = read
        if mark is None:
            self.agents.pop(agent_id, None)
        else:
            self.agents[agent_id] = mark
        metrics.QUARANTINED.set(len(self.agents))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
