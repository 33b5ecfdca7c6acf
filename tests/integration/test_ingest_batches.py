"""The batch ingest's own guarantees with a real broker: a batch that fails for an unexpected reason is read again
from the committed offsets with its partitions' state rebuilt, so none of its findings is lost and none of its
events is counted twice; a finding is sent as soon as it is made, not at the checkpoint; a batch is bounded in
events, not messages."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from service.runtime import ingest
from service.runtime.ingest import BatchIngest, BatchLimits, Deliveries
from service.runtime.worker import Runtime
from tests.support.isolated_worker import RecordingResponder, isolated_settings, wait_for
from tests.support.kafka_helpers import event, produce_events

pytestmark = pytest.mark.integration


async def test_a_batch_that_fails_undelivered_is_read_again_and_none_of_its_findings_is_lost(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle = BatchIngest._settle
    failures = [RuntimeError("a bug between judging and the acknowledgements")]

    async def failing_once(self: BatchIngest, deliveries: Deliveries) -> None:
        if failures and deliveries.out:
            raise failures.pop()
        await settle(self, deliveries)

    monkeypatch.setattr(BatchIngest, "_settle", failing_once)
    s = isolated_settings(kafka_bootstrap, tmp_path)
    strays = [event(f"stray-{s.app_id}-{i}", kind="prompt") for i in range(20)]
    responder = RecordingResponder()
    async with Runtime(s, responder=responder):
        await produce_events(kafka_bootstrap, s.topic_activity, strays)
        await wait_for(lambda: {f.event_id for f in responder.findings} >= {e["event_id"] for e in strays},
                       what="a finding for every event, the failed batch's included")
    assert failures == [], "the batch failed once"


async def test_a_finding_is_on_its_topic_before_the_checkpoint_that_commits_its_event(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = BatchIngest._checkpoint
    opened = asyncio.Event()
    held: list[int] = []

    async def held_open(self: BatchIngest) -> None:  # a checkpoint with records to settle waits for the test
        if self._deliveries.out:
            held.append(len(self._deliveries.out))
            await opened.wait()
        await checkpoint(self)

    commit = BatchIngest._commit
    committed: list[dict[TopicPartition, int]] = []

    async def recorded(self: BatchIngest, offsets: dict[TopicPartition, int]) -> None:
        committed.append(offsets)
        await commit(self, offsets)

    monkeypatch.setattr(BatchIngest, "_checkpoint", held_open)
    monkeypatch.setattr(BatchIngest, "_commit", recorded)
    s = isolated_settings(kafka_bootstrap, tmp_path)
    strays = [event(f"stray-{s.app_id}-{i}", kind="prompt") for i in range(3)]
    responder = RecordingResponder()
    async with Runtime(s, responder=responder):
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


async def test_a_batch_is_bounded_in_events_not_messages(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "BatchLimits", functools.partial(BatchLimits, max_events=150))
    commit = BatchIngest._commit
    committed: list[int] = []

    async def recorded(self: BatchIngest, offsets: dict[TopicPartition, int]) -> None:
        committed.extend(offsets.values())
        await commit(self, offsets)

    monkeypatch.setattr(BatchIngest, "_commit", recorded)
    s = isolated_settings(kafka_bootstrap, tmp_path)
    agent = f"stray-{s.app_id}"
    messages = [[event(agent, kind="prompt") for _ in range(100)] for _ in range(6)]
    responder = RecordingResponder()
    async with Runtime(s, responder=responder):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50, max_batch_size=1 << 20)
        await producer.start()
        try:  # one partition (one agent), fetched together
            await asyncio.gather(*[await producer.send(s.topic_activity, json.dumps(m).encode(), key=agent.encode())
                                   for m in messages])
        finally:
            await producer.stop()
        await wait_for(lambda: len({f.event_id for f in responder.findings}) == 600, what="600 findings")
        await wait_for(lambda: committed and committed[-1] == 6, what="the last message committed")
    steps = [b - a for a, b in zip([0, *committed], committed, strict=False)]
    assert max(steps) <= 2, f"a batch held more than 150 events plus one message's: commits at {committed}"
