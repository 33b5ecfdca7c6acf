"""The cut-over from the faust agents' group to the ingest group: on its first start the ingest group takes the
old group's committed offsets, so the events the old agent judged are not judged again and none after them is
skipped; later starts leave the ingest group's own offsets alone, and a topic that moves over later is seeded on
its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from service.runtime.ingest import ingest_group, seed_from_old_group
from service.runtime.topics import ensure_topics, topic_configs, topic_names
from service.runtime.worker import Runtime
from tests.support.isolated_worker import RecordingResponder, isolated_settings, wait_for
from tests.support.kafka_helpers import committed_offsets, event, has_marker, produce_each, read_topic
from warden.contract.findings import Finding

pytestmark = pytest.mark.integration


async def commit_as(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """What the old `warden.ingest` agent left behind: the faust group's committed offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


async def test_the_ingest_group_starts_where_the_old_agent_committed_and_is_seeded_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = isolated_settings(kafka_bootstrap, tmp_path)
    await ensure_topics(kafka_bootstrap, topic_names(s), s.topic_partitions, configs=topic_configs(s))
    agents = [f"stray-{s.app_id}-{i}" for i in range(8)]
    judged_before = [event(agent, kind="prompt") for agent in agents]
    after = [event(agent, kind="prompt") for agent in agents]  # same agents, so the same partitions, later
    old = await produce_each(kafka_bootstrap, s.topic_activity, judged_before)
    await commit_as(kafka_bootstrap, s.app_id, {TopicPartition(s.topic_activity, p): o for p, o in old.items()})
    ends = old | await produce_each(kafka_bootstrap, s.topic_activity, after)

    responder = RecordingResponder()
    async with Runtime(s, responder=responder):
        await wait_for(lambda: {f.event_id for f in responder.findings} >= {e["event_id"] for e in after},
                       what="a finding for every event after the old group's offsets")
    # Every partition with an old event has a new one after it: had the old ones been read, they came first.
    # The same agent's findings share a partition too, so an old event's finding would be read before the new one's.
    judged = {Finding.model_validate_json(r.value).event_id for r in await read_topic(
        kafka_bootstrap, s.topic_findings, until=has_marker(e["event_id"] for e in after))}
    assert judged == {e["event_id"] for e in after}, "events the old agent had judged were judged again"

    group = ingest_group(s.app_id)
    mine = await committed_offsets(kafka_bootstrap, group, s.topic_activity)
    assert mine == ends
    assert await seed_from_old_group(kafka_bootstrap, s.app_id, group, [s.topic_activity]) == {}, \
        "an ingest group with offsets of its own is never seeded again"
    assert await committed_offsets(kafka_bootstrap, group, s.topic_activity) == mine



async def test_a_topic_that_moves_to_the_ingest_group_later_is_seeded_on_its_own(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The span topic moved a release after the activity topic: the ingest group has activity offsets already."""
    s = isolated_settings(kafka_bootstrap, tmp_path)
    await ensure_topics(kafka_bootstrap, topic_names(s), s.topic_partitions, configs=topic_configs(s))
    group = ingest_group(s.app_id)
    await commit_as(kafka_bootstrap, group, {TopicPartition(s.topic_activity, 0): 0})
    spans = {TopicPartition(s.topic_otlp, 0): 0, TopicPartition(s.topic_otlp, 1): 0}
    await commit_as(kafka_bootstrap, s.app_id, {TopicPartition(s.topic_activity, 0): 0} | spans)
    assert await seed_from_old_group(kafka_bootstrap, s.app_id, group, [s.topic_activity, s.topic_otlp]) == spans
    assert await committed_offsets(kafka_bootstrap, group, s.topic_otlp) == {0: 0, 1: 0}
    assert await seed_from_old_group(kafka_bootstrap, s.app_id, group, [s.topic_activity, s.topic_otlp]) == {}
