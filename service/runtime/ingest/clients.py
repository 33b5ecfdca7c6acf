"""The ingest's own Kafka clients, configured for batches: a consumer outside faust's group, an all-acks producer."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from service.runtime.kafka_access import KafkaAccess
from service.runtime.settings import Settings
from service.runtime.topics import DLQ_HEADER_ROOM


def ingest_group(app_id: str) -> str:
    """The ingest consumer group of a worker whose faust app (and findings agent) uses the group `app_id`."""
    return f"{app_id}.ingest"


def ingest_producer(kafka: KafkaAccess, s: Settings) -> AIOKafkaProducer:
    """Findings and dead letters: acknowledged by every in-sync replica before their offsets are committed."""
    return kafka.producer(acks="all", linger_ms=2, max_request_size=s.dlq_max_bytes + DLQ_HEADER_ROOM,
                          max_batch_size=1 << 20)


def ingest_consumer(kafka: KafkaAccess, s: Settings, fetch_wait_ms: int) -> AIOKafkaConsumer:
    """The input topics' consumer in the group `ingest_group(app_id)`, committing only by hand."""
    fetch_bytes = max(8 * 1024 * 1024, 2 * s.max_message_bytes)
    return kafka.consumer(
        group_id=ingest_group(s.app_id), enable_auto_commit=False,
        group_instance_id=s.kafka_group_instance_id,
        auto_offset_reset="earliest", max_partition_fetch_bytes=fetch_bytes, fetch_max_bytes=4 * fetch_bytes,
        fetch_max_wait_ms=fetch_wait_ms,
        session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
        heartbeat_interval_ms=int(s.kafka_heartbeat_interval_s * 1000),
        rebalance_timeout_ms=int(s.kafka_rebalance_timeout_s * 1000),
        # Range first: a worker gets the same partition numbers of every input topic, so a trace's spans and its
        # GenAI log records (both keyed by trace id, on topics of equal partition counts) meet in one worker's
        # resolver. Round robin, the old default, stays listed: a group mid-upgrade agrees on it until every
        # member offers range.
        partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
    )
