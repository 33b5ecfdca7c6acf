"""Warden's topics as the broker keeps them: created once, with the size limit Warden needs, or a one-line refusal.

Apache Kafka refuses a record batch over the topic's `max.message.bytes` (broker default 1 MiB); Tansu has no limit.
Warden must be able to take an oversized activity message and write its dead letter, so it sets the limit itself."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from service.runtime.topics import DLQ_HEADER_ROOM, TopicCreationFailed, ensure_topics, topic_configs, topic_names
from tests.support.isolated_worker import isolated_settings
from tests.support.kafka_helpers import produce

pytestmark = pytest.mark.integration


async def topic_config(bootstrap: str, topic: str, key: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, None)])
    finally:
        await admin.close()
    [(_code, _message, _type, _name, entries)] = response.resources
    return str(next(value for name, value, *_ in entries if name == key))


async def max_message_bytes(bootstrap: str, topic: str) -> int:
    return int(await topic_config(bootstrap, topic, "max.message.bytes"))


async def test_warden_creates_its_topics_once_with_room_for_an_oversized_message_and_its_dead_letter(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = isolated_settings(kafka_bootstrap, tmp_path)
    names, configs = topic_names(s), topic_configs(s)
    assert await ensure_topics(kafka_bootstrap, names, s.topic_partitions, configs=configs) == names
    assert await ensure_topics(kafka_bootstrap, names, s.topic_partitions, configs=configs) == []
    room = s.dlq_max_bytes + DLQ_HEADER_ROOM
    assert await max_message_bytes(kafka_bootstrap, s.topic_activity) == room
    assert await max_message_bytes(kafka_bootstrap, s.topic_dlq) == room
    assert await max_message_bytes(kafka_bootstrap, s.topic_otlp) == room  # span batches are dead-lettered whole too
    assert await max_message_bytes(kafka_bootstrap, s.topic_otlp_logs) == room  # and log batches
    # Gateways read the control and revocation topics from the start: only each key's latest record matters.
    assert await topic_config(kafka_bootstrap, s.topic_control, "cleanup.policy") == "compact"
    assert await topic_config(kafka_bootstrap, s.topic_revocations, "cleanup.policy") == "compact"
    # Both are over Apache Kafka's 1 MiB default: refused there unless the topic allows them.
    oversized = b"x" * (2 * s.max_message_bytes)
    dead_letter = b"x" * (s.dlq_max_bytes + 4096)
    assert await produce(kafka_bootstrap, s.topic_activity, [(b"k", oversized)]) == 1
    assert await produce(kafka_bootstrap, s.topic_dlq, [(b"k", dead_letter)]) == 1


async def test_a_topic_someone_else_created_too_small_is_named_at_start(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = isolated_settings(kafka_bootstrap, tmp_path)
    names = topic_names(s)
    default = {"max.message.bytes": "1048588"}  # Apache Kafka's default, as an operator's topic would have it
    await ensure_topics(kafka_bootstrap, names, 1, configs=dict.fromkeys(names, default))
    caplog.set_level(logging.WARNING, logger="warden")
    assert await ensure_topics(kafka_bootstrap, names, 4, configs=topic_configs(s)) == []
    warned = sorted(r.getMessage().split()[1] for r in caplog.records if "max.message.bytes" in r.getMessage())
    # The findings topic needs no more than the default; the span and log topics, like the activity one, do.
    assert warned == sorted([s.topic_activity, s.topic_dlq, s.topic_otlp, s.topic_otlp_logs])


@pytest.mark.apache_kafka  # Tansu accepts any config value
async def test_a_topic_the_broker_refuses_to_create_is_one_line_with_the_brokers_reason(kafka_bootstrap: str) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.refused"
    with pytest.raises(TopicCreationFailed) as refused:
        await ensure_topics(kafka_bootstrap, [topic], 1, configs={topic: {"max.message.bytes": "lots"}})
    message = str(refused.value)
    assert message.startswith(f"Kafka at {kafka_bootstrap} refused to create topic {topic}: ")
    assert "max.message.bytes" in message and "\n" not in message
