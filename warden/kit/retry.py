"""The one retry policy of the project: exponential backoff, in process through stamina or durable by delay."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays of `initial_s`, doubling up to `max_s`; `attempts=None` keeps trying until cancelled."""

    initial_s: float
    max_s: float = 30.0
    attempts: int | None = None

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based): for retries kept in a database."""
        return float(min(self.initial_s * 2 ** (attempt - 1), self.max_s))

    async def call(self, fn: Callable[[], Awaitable[T]],
                   on_failure: Callable[[int, Exception], None] | None = None) -> T:
        """Await `fn()` until it succeeds; the last failure propagates once the attempts are spent.

        `on_failure(attempt, exc)` is told of each failure that will be retried (to log or count it).
        Cancellation is never retried. The first attempt runs outside stamina: setting up its retry context costs
        about 18 µs, which the hot path (one call per Kafka message) should pay only when something failed.
        """
        try:
            return await fn()
        except Exception as exc:
            if self.attempts == 1:
                raise
            if on_failure is not None:
                on_failure(1, exc)
        await asyncio.sleep(self.delay(1))
        attempt = 1

        def retried(exc: BaseException) -> bool:
            nonlocal attempt
            if not isinstance(exc, Exception):  # cancellation, interrupts: never retried
                return False
            attempt += 1
            if on_failure is not None and (self.attempts is None or attempt < self.attempts):
                on_failure(attempt, exc)
            return True

        async for trying in stamina.retry_context(
            on=retried, attempts=None if self.attempts is None else self.attempts - 1, timeout=None,
            wait_initial=self.delay(2), wait_max=self.max_s, wait_jitter=0.0, wait_exp_base=2,
        ):
            with trying:
                return await fn()
        raise AssertionError("unreachable: stamina returns or raises")  # pragma: no cover
