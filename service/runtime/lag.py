"""Consumer lag read from the broker, per topic a worker consumes: the high watermark (ListOffsets latest) minus the
committed offset of the group that consumes it (`<app_id>.ingest` for the input topics, `<app_id>` for findings),
summed over partitions. Exported as `warden_consumer_lag{topic}`.

Read from the broker rather than from the consumer's own view, so that a stalled or dead worker still shows its
backlog on any worker that is up. Tansu's high watermark is wrong (see the facts note): the figure is only right
on Apache Kafka, where the tests check it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from service.runtime.kafka_access import KafkaAccess, access
from warden.kit.loop import PollingLoop
from warden.telemetry import metrics

log = logging.getLogger("warden.lag")


class ConsumerLag:
    """Measures each topic's lag behind the group that consumes it (`groups`: topic → group) every `interval_s`
    (one admin client and one group-less consumer, kept open between passes)."""

    def __init__(self, kafka: KafkaAccess | str, groups: Mapping[str, str], interval_s: float) -> None:
        self.kafka, self.groups = access(kafka), dict(groups)
        self.loop = PollingLoop("consumer-lag", interval_s, self._pass, log)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._admin = self.kafka.admin()
        await self._admin.start()
        self._consumer = self.kafka.consumer(group_id=None, enable_auto_commit=False)
        await self._consumer.start()
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def measure(self) -> dict[str, int]:
        """Lag per topic now (a partition the group never committed counts from offset 0), and set the gauge."""
        assert self._admin is not None and self._consumer is not None, "start() first"
        lags: dict[str, int] = {}
        for topic, group in self.groups.items():
            [described] = await self._admin.describe_topics([topic])
            partitions = sorted(TopicPartition(topic, p["partition"]) for p in described.get("partitions") or ())
            if not partitions:
                continue
            ends = await self._consumer.end_offsets(partitions)
            try:  # named partitions: Tansu cannot answer an OffsetFetch for all of a group's partitions
                committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
            except KafkaError as exc:  # e.g. no coordinator yet: keep the last figure rather than guess
                log.warning("consumer lag of %s not read this time: %s", topic, exc)
                continue
            done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
            lags[topic] = sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
            metrics.CONSUMER_LAG.labels(topic=topic).set(lags[topic])
        return lags

    async def _pass(self) -> bool:
        await self.measure()
        return False
