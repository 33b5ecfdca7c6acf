"""`warden_consumer_lag{topic}` is read from the broker: with the worker stopped it equals the backlog produced, and
it drains to 0 once a worker has caught up. Apache Kafka only: Tansu's high watermark is wrong."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from service.runtime.ingest import ingest_group
from service.runtime.lag import ConsumerLag
from service.runtime.settings import Settings
from service.runtime.topics import ensure_topics, topic_configs, topic_names
from service.runtime.worker import Runtime
from tests.support.isolated_worker import RecordingResponder, isolated_settings, wait_for
from tests.support.kafka_helpers import event, produce_events
from tests.support.metrics import metric_value
from warden.telemetry import metrics

pytestmark = [pytest.mark.integration, pytest.mark.apache_kafka]


def gauge(topic: str) -> float:
    return metric_value(metrics.CONSUMER_LAG, topic=topic)


async def _topics_ready(bootstrap: str, s: Settings) -> None:
    """Create the topics and wait until the broker's metadata lists their partitions (KRaft propagates a new
    topic asynchronously; the worker's control view refuses a topic with none)."""
    await ensure_topics(bootstrap, topic_names(s), s.topic_partitions, configs=topic_configs(s))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(100):
            described = await admin.describe_topics(topic_names(s))
            if all(d.get("partitions") for d in described):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"topics never showed partitions: {described}")
    finally:
        await admin.close()


async def test_consumer_lag_per_topic_is_the_backlog_and_drains_to_zero(kafka_bootstrap: str, tmp_path: Path) -> None:
    s = isolated_settings(kafka_bootstrap, tmp_path)
    run = uuid.uuid4().hex[:6]
    events = [event(f"stray-{run}-{i % 16}", kind="prompt", content={"prompt": f"p{i}"}) for i in range(58)]
    warm_up, backlog = events[:8], events[8:]
    await _topics_ready(kafka_bootstrap, s)
    responder = RecordingResponder()
    async with Runtime(s, responder=responder):  # gives the group a committed position
        await produce_events(kafka_bootstrap, s.topic_activity, warm_up)
        await wait_for(lambda: len(responder.findings) >= 8, what="findings of the warm-up events")
    await produce_events(kafka_bootstrap, s.topic_activity, backlog)  # the worker is stopped: all of it is lag

    groups = {s.topic_activity: ingest_group(s.app_id), s.topic_findings: s.app_id}
    lag = ConsumerLag(kafka_bootstrap, groups, interval_s=3600)
    await lag.start()
    try:
        assert await lag.measure() == {s.topic_activity: 50, s.topic_findings: 0}
        assert gauge(s.topic_activity) == 50
        async with Runtime(s, responder=responder):
            await wait_for(lambda: len(responder.findings) >= 58, what="a finding per backlog event")
            for _ in range(300):  # the findings agent commits within broker_commit_interval (1 s)
                if (await lag.measure())[s.topic_activity] == 0:
                    break
                await asyncio.sleep(0.1)
        assert gauge(s.topic_activity) == 0
    finally:
        await lag.stop()
