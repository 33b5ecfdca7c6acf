"""The records a batch made since the last commit, on their way to the broker: sent as soon as made, every one
acknowledged (the refused ones sent again) before their offsets may be committed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from service.runtime.ingest.dead_letters import Outgoing
from warden.kit.retry import Backoff
from warden.telemetry import metrics

log = logging.getLogger("warden.ingest")

DELIVERY = Backoff(initial_s=0.2, max_s=30.0)  # findings and dead letters: sent again until the broker takes them


Send = Callable[[Outgoing], Awaitable[Awaitable[object]]]  # produce one record: its delivery to await


class Deliveries:
    """The records made since the last commit, on their way to the broker: each is sent as soon as it is made, so a
    finding is on its topic while the rest is judged, and every one is acknowledged before the checkpoint commits."""

    def __init__(self, send: Send) -> None:
        self.out: list[Outgoing] = []  # what the batch made, in order: the judge appends here
        self._send = send
        self._sent = 0  # how many of `out` were handed to the producer
        self._in_flight: list[tuple[Outgoing, Awaitable[object]]] = []
        self._refused: list[tuple[Outgoing, KafkaError]] = []

    async def send_new(self) -> None:
        """Hand the records made since the last call to the producer (each returns as soon as it is queued)."""
        if self._sent == len(self.out):  # most records make nothing
            return
        made, self._sent = self.out[self._sent:], len(self.out)
        await self._send_each(made)

    async def _send_each(self, records: list[Outgoing]) -> None:
        for o in records:
            try:
                self._in_flight.append((o, await self._send(o)))
            except KafkaError as exc:
                self._refused.append((o, exc))

    async def settle(self, delivered: Callable[[Outgoing], None], stopping: Callable[[], bool]) -> None:
        """Await every acknowledgement; the records not taken are sent again (only those) until they are, so the
        caller commits only a fully delivered batch. Raises `Stopping` instead of waiting to retry when the
        worker stops: the batch then stays uncommitted."""
        await self.send_new()
        attempt = 0
        while True:
            failed = [o for o, _ in self._refused]
            last: BaseException | None = self._refused[-1][1] if self._refused else None
            in_flight, self._in_flight, self._refused = self._in_flight, [], []
            for o, delivery in in_flight:
                try:
                    await delivery
                except KafkaError as exc:
                    failed.append(o)
                    last = exc
                else:
                    delivered(o)
            if not failed:
                return
            attempt += 1
            metrics.PROCESSING_RETRIES.inc()
            log.error("%d of %d records of the batch were not delivered (%s: %s); sending them again in %.1fs, "
                      "the batch stays uncommitted until then", len(failed), len(self.out), type(last).__name__,
                      last, DELIVERY.delay(attempt))
            if stopping():
                raise Stopping
            await asyncio.sleep(DELIVERY.delay(attempt))
            await self._send_each(failed)


class Stopping(Exception):
    """The worker stops while a batch is still undelivered: it is left uncommitted, for the next owner."""

