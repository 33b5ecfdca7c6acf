"""The faust parts Warden replaces keep their promises: no table wait, a fetch wait Warden sets, and a seek after a
rebalance that reads again what it dropped."""

from __future__ import annotations

import uuid

import faust
import pytest
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as driver

from service.runtime.faust_parts import NoTablesManager, use_consumer
from service.runtime.topics import ensure_topics
from tests.support.kafka_helpers import event, produce_events


async def test_the_table_manager_refuses_to_start_without_waiting_when_a_table_was_declared() -> None:
    """Its start skips faust's 1 s wait for late tables; that is only right while Warden declares none."""
    app = faust.App("warden-test-tables", broker="kafka://127.0.0.1:1", TableManager=NoTablesManager,
                    store="memory://")
    app.Table("late")
    with pytest.raises(RuntimeError, match="declares no faust tables"):
        assert isinstance(app.tables, NoTablesManager)
        await app.tables.on_start()


async def test_the_consumer_an_app_makes_waits_as_long_as_warden_says() -> None:
    app = faust.App("warden-test-fetch", broker="kafka://127.0.0.1:1", store="memory://")
    use_consumer(app, 7)
    async def ignore(*_: object) -> None: ...

    consumer = app.transport.create_consumer(callback=ignore, on_partitions_revoked=ignore,
                                             on_partitions_assigned=ignore)
    assert isinstance(consumer, driver.Consumer) and isinstance(consumer._thread, driver.AIOKafkaConsumerThread)
    assert isinstance(app.transport, driver.Transport)  # use_consumer's
    made = consumer._thread._create_worker_consumer(app.transport)  # what start() would start
    try:
        assert made._fetch_max_wait_ms == 7
    finally:
        await made.stop()


@pytest.mark.integration
async def test_after_a_rebalance_a_partition_with_nothing_committed_is_read_again_from_its_start(
        kafka_bootstrap: str) -> None:
    """faust seeks back to the committed offsets after each rebalance, to read again what the rebalance dropped.
    A partition with nothing committed must go back to its start: aiokafka's seek leaves it where the dropped
    records left it, and they were never read (two workers lost a whole findings partition that way)."""
    suffix = uuid.uuid4().hex[:8]
    topic = f"seek{suffix}"
    await ensure_topics(kafka_bootstrap, [topic], 1)
    await produce_events(kafka_bootstrap, topic, [event(f"a{i}") for i in range(5)])
    app = faust.App(f"warden-test-seek-{suffix}", broker=f"kafka://{kafka_bootstrap}", store="memory://")
    use_consumer(app, 10)
    async def ignore(*_: object) -> None: ...

    consumer = app.transport.create_consumer(callback=ignore, on_partitions_revoked=ignore,
                                             on_partitions_assigned=ignore)
    assert isinstance(consumer, driver.Consumer)
    thread = consumer._thread
    assert isinstance(thread, driver.AIOKafkaConsumerThread) and isinstance(app.transport, driver.Transport)
    made = thread._create_worker_consumer(app.transport)
    tp = TopicPartition(topic, 0)
    await made.start()
    try:
        made.assign([tp])
        read = 0
        while read < 5:  # fetched, as a rebalance would find them: read, never processed nor committed
            read += sum(len(r) for r in (await made.getmany(tp, timeout_ms=2000)).values())
        assert await made.position(tp) == 5
        thread._consumer = made  # what the thread's start() sets; the seek runs on it
        # defined on the thread class use_consumer makes inside a function, so no annotation can name it
        committed = await thread._seek_to_committed_or_start()  # type: ignore[attr-defined]
        assert committed == {tp: None}
        assert await made.position(tp) == 0, "the records read before the rebalance are read again"
    finally:
        await made.stop()
