"""Wakes this worker's outbox when any writer commits notifications: PostgreSQL's LISTEN on the channel the
notifications table's trigger notifies (migration 0009), so a notification recorded by another worker, the API or a
break-glass CLI goes out at once, not at the next poll. The poll stays: it is the fallback while this reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("warden.outbox")
CHANNEL = "warden_outbox"
RECONNECT_S = 5.0


class ListenWake:
    """Holds one pooled connection LISTENing on CHANNEL (asyncpg) and calls `wake` on each notification."""

    def __init__(self, engine: AsyncEngine, wake: Callable[[], None], reconnect_s: float = RECONNECT_S) -> None:
        self.engine, self.wake, self.reconnect_s = engine, wake, reconnect_s
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.engine.dialect.name != "postgresql":
            return  # SQLite: one worker, woken in process
        self._task = asyncio.create_task(self._run(), name="warden.outbox.listen")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _notified(self, *_: object) -> None:
        self.wake()

    async def _run(self) -> None:
        while True:
            try:
                if not await self._listen():
                    return  # this driver cannot LISTEN: the poll alone, and no connection held for nothing
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the poll carries on; say so and try again
                log.warning("outbox wake-up: LISTEN %s failed (%s: %s); polling until it is back in %.0fs", CHANNEL,
                            type(exc).__name__, exc, self.reconnect_s)
            self.listening.clear()
            await asyncio.sleep(self.reconnect_s)

    async def _listen(self) -> bool:
        """Listen until the connection is lost (then raise); False at once when the driver cannot listen."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            if driver is None or not hasattr(driver, "add_listener"):
                log.warning("outbox wake-up: the %s driver cannot LISTEN; notifications from other workers wait for "
                            "the poll", self.engine.dialect.driver)
                return False
            lost = asyncio.Event()

            def terminated(_: object) -> None:
                lost.set()

            await driver.add_listener(CHANNEL, self._notified)
            driver.add_termination_listener(terminated)
            try:
                self.listening.set()
                self.wake()  # what was committed while this was not listening
                await lost.wait()
                raise ConnectionError("the listening connection was closed")
            finally:  # the connection goes back to the pool: nothing of this listener stays on it
                driver.remove_termination_listener(terminated)
                if not driver.is_closed():
                    with contextlib.suppress(Exception):
                        await driver.remove_listener(CHANNEL, self._notified)
