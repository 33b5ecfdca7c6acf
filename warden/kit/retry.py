"""The one retry policy of the project: exponential backoff, in process through stamina or durable by delay."""

from __future__ import annotations

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
        Cancellation is never retried.
        """
        attempt = 0

        def retried(exc: Exception) -> bool:
            nonlocal attempt
            attempt += 1
            if on_failure is not None and (self.attempts is None or attempt < self.attempts):
                on_failure(attempt, exc)
            return True

        async for trying in stamina.retry_context(
            on=retried, attempts=self.attempts, timeout=None, wait_initial=self.initial_s, wait_max=self.max_s,
            wait_jitter=0.0, wait_exp_base=2,
        ):
            with trying:
                return await fn()
        raise AssertionError("unreachable: stamina returns or raises")  # pragma: no cover
