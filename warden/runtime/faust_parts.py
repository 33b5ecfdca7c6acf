"""The parts of faust that Warden replaces because they cost every alert or every start time (bench/latency.py,
bench/startup.py): the consumer's fetch wait, which faust fixes at 1.5 s and a broker that holds a fetch for its
whole wait (Tansu) adds to every alert at low load, and the table manager's fixed 1 s sleep before the app may join
its group, for tables Warden does not have."""

from __future__ import annotations

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

    return ConsumerThread


def use_fetch_wait(app: faust.App, fetch_wait_ms: int) -> None:
    """Make `app` consume with `fetch_wait_ms` as the broker's longest wait for data (before the app starts)."""
    thread = _consumer_thread(fetch_wait_ms)

    class ShortWaitConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return thread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = ShortWaitConsumer

    app.transport = Transport(app.conf.broker_consumer, app)
