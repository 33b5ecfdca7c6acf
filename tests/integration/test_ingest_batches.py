"""The batch ingest's own guarantees with a real broker: a batch that fails for an unexpected reason is read again
from the committed offsets with its partitions' state rebuilt, so none of its findings is lost and none of its
events is counted twice; a finding is sent as soon as it is made, not at the checkpoint; a batch is bounded in
events, not messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service.runtime.ingest.checkpoint import Checkpoint
from service.runtime.ingest.deliveries import Deliveries
from service.runtime.ingest.feed import BatchLimits
from service.runtime.worker import Runtime
from tests.support.isolated_worker import RecordingResponder, isolated_settings, wait_for
from tests.support.kafka_helpers import event, produce_events

pytestmark = pytest.mark.integration


class FailingOnce(Checkpoint):
    """A checkpoint whose first settling of records fails, as a bug between judging and the acknowledgements."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = [RuntimeError("a bug between judging and the acknowledgements")]

    async def settle(self, deliveries: Deliveries, stopping: Callable[[], bool]) -> None:
        if self.failures and deliveries.out:
            raise self.failures.pop()
        await super().settle(deliveries, stopping)


class Recorded(Checkpoint):
    """A checkpoint that records the offsets of every commit it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.committed: list[dict[TopicPartition, int]] = []

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
        self.committed.append(offsets)
        return await super().commit(consumer, offsets)


class HeldOpen(Recorded):
    """A checkpoint that, with records to settle, waits for the test before settling them."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = asyncio.Event()
        self.held: list[int] = []

    async def settle(self, deliveries: Deliveries, stopping: Callable[[], bool]) -> None:
        if deliveries.out:
            self.held.append(len(deliveries.out))
            await self.opened.wait()
        await super().settle(deliveries, stopping)


async def test_a_batch_that_fails_undelivered_is_read_again_and_none_of_its_findings_is_lost(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    checkpoint = FailingOnce()
    failures = checkpoint.failures
    s = isolated_settings(kafka_bootstrap, tmp_path)
    strays = [event(f"stray-{s.app_id}-{i}", kind="prompt") for i in range(20)]
    responder = RecordingResponder()
    async with Runtime(s, responder=responder, checkpoint=checkpoint):
        await produce_events(kafka_bootstrap, s.topic_activity, strays)
        await wait_for(lambda: {f.event_id for f in responder.findings} >= {e["event_id"] for e in strays},
                       what="a finding for every event, the failed batch's included")
    assert failures == [], "the batch failed once"


async def test_a_finding_is_on_its_topic_before_the_checkpoint_that_commits_its_event(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    checkpoint = HeldOpen()
    opened, held, committed = checkpoint.opened, checkpoint.held, checkpoint.committed
    s = isolated_settings(kafka_bootstrap, tmp_path)
    strays = [event(f"stray-{s.app_id}-{i}", kind="prompt") for i in range(3)]
    responder = RecordingResponder()
    async with Runtime(s, responder=responder, checkpoint=checkpoint):
        try:
            await produce_events(kafka_bootstrap, s.topic_activity, strays)
            await wait_for(lambda: {f.event_id for f in responder.findings} >= {e["event_id"] for e in strays},
                           what="every finding, while the checkpoint that would commit their events waits")
            # The findings may come before the loop reaches its checkpoint (it checkpoints when its feed runs dry
            # or a commit is due): either way none of their events may have been committed yet.
            assert not any(tp.topic == s.topic_activity for offsets in committed for tp in offsets), committed
            # And their checkpoint does begin, holding them: it waits for their acknowledgements, not the reverse.
            await wait_for(lambda: held, what="the checkpoint with their records in it")
            assert sum(held) >= len(strays), held
            assert not any(tp.topic == s.topic_activity for offsets in committed for tp in offsets), committed
        finally:
            opened.set()


async def test_a_batch_is_bounded_in_events_not_messages(kafka_bootstrap: str, tmp_path: Path) -> None:
    checkpoint = Recorded()
    s = isolated_settings(kafka_bootstrap, tmp_path)
    agent = f"stray-{s.app_id}"
    messages = [[event(agent, kind="prompt") for _ in range(100)] for _ in range(6)]
    responder = RecordingResponder()
    async with Runtime(s, responder=responder, limits=BatchLimits(max_events=150), checkpoint=checkpoint):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50, max_batch_size=1 << 20)
        await producer.start()
        try:  # one partition (one agent), fetched together
            await asyncio.gather(*[await producer.send(s.topic_activity, json.dumps(m).encode(), key=agent.encode())
                                   for m in messages])
        finally:
            await producer.stop()
        await wait_for(lambda: len({f.event_id for f in responder.findings}) == 600, what="600 findings")
        await wait_for(lambda: checkpoint.committed and [*checkpoint.committed[-1].values()][-1] == 6,
                       what="the last message committed")
    committed = [o for offsets in checkpoint.committed for o in offsets.values()]
    steps = [b - a for a, b in zip([0, *committed], committed, strict=False)]
    assert max(steps) <= 2, f"a batch held more than 150 events plus one message's: commits at {committed}"
