"""The parts of faust that Warden replaces: two because they cost every alert or every start time (bench/latency.py,
bench/startup.py): the consumer's fetch wait, which faust fixes at 1.5 s and a broker that holds a fetch for its
whole wait (Tansu) adds to every alert at low load, and the table manager's fixed 1 s sleep before the app may join
its group, for tables Warden does not have; and one because it loses findings: the seek back to the committed
offsets after a rebalance, which skips every partition that has none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiokafka
import faust
from faust.tables.manager import TableManager
from faust.transport.drivers import aiokafka as driver


class NoTablesManager(TableManager):
    """faust's table manager without its start-up sleep (1 s, for tables to be declared late): Warden declares none,
    and everything it has is declared before the app starts."""

    async def on_start(self) -> None:
        if self.app.tables:
            raise RuntimeError("warden declares no faust tables; this manager starts without waiting for them")
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def _consumer_thread(fetch_wait_ms: int) -> type[driver.AIOKafkaConsumerThread]:
    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # aiokafka keeps the argument here until start() builds its fetcher from it; faust passes no way to set
            # it. Fail loudly, not slowly, if a new aiokafka renames it.
            if not hasattr(consumer, "_fetch_max_wait_ms"):
                raise RuntimeError("aiokafka.AIOKafkaConsumer has no _fetch_max_wait_ms: update warden's transport")
            consumer._fetch_max_wait_ms = fetch_wait_ms
            return consumer

        async def seek_to_committed(self) -> Mapping[Any, int]:
            return await self.call_thread(self._seek_to_committed_or_start)  # type: ignore[no-any-return]

        async def _seek_to_committed_or_start(self) -> Mapping[Any, int]:
            """faust calls this after each rebalance, before the agent resumes, to read again what the rebalance
            made it drop (fetched, never processed). aiokafka's seek skips a partition whose committed offset is
            None or 0, leaving it past those records: with nothing committed yet, they were never read again (seen
            with two workers: a findings partition never consumed). Such a partition goes back to its start, where
            the group's `earliest` reset would begin it."""
            consumer = self._ensure_consumer()
            committed: Mapping[Any, int] = await consumer.seek_to_committed()
            unset = [tp for tp, offset in committed.items() if not offset]
            if unset:
                await consumer.seek_to_beginning(*unset)
            return committed

    return ConsumerThread


def use_consumer(app: faust.App, fetch_wait_ms: int) -> None:
    """Make `app` consume with `fetch_wait_ms` as the broker's longest wait for data, and seek back to the start of
    a partition with nothing committed after a rebalance (before the app starts)."""
    thread = _consumer_thread(fetch_wait_ms)

    class ShortWaitConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return thread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = ShortWaitConsumer

    app.transport = Transport(app.conf.broker_consumer, app)
