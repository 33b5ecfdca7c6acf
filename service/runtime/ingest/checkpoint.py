"""The end of a batch: every record it made acknowledged (and counted in the metrics), then its offsets committed.
A collaborator of the loop, passed to it, so that what happens at a checkpoint can be observed or withheld."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter

from service.runtime.ingest.dead_letters import Outgoing
from service.runtime.ingest.deliveries import Deliveries
from warden.telemetry import metrics

log = logging.getLogger("warden.ingest")


class Checkpoint:
    """Settles a batch's deliveries, then commits its offsets."""

    def __init__(self) -> None:
        self._findings_children: dict[tuple[str, str, bool], Counter] = {}

    async def settle(self, deliveries: Deliveries, stopping: Callable[[], bool]) -> None:
        """Await every record's acknowledgement (sending the refused ones again); raises `Stopping` when the worker
        stops before they are all taken: the batch then stays uncommitted."""
        await deliveries.settle(self._count, stopping)

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
        """Commit the batch; True if the group took it. A commit refused by a rebalance is not fatal: the new owner
        re-reads the batch and produces the same findings again (same ids), which the responder dedups."""
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            metrics.INGEST_COMMIT_FAILURES.inc()
            log.warning("commit of %s refused (%s): the batch will be read again by the partitions' owner",
                        sorted((tp.partition, o) for tp, o in offsets.items()), type(exc).__name__)
            return False
        return True

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
