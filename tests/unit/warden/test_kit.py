"""The shared mechanisms: one retry policy (attempts, doubling delays, no retry on cancel) and one polling loop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from warden.kit.loop import PollingLoop
from warden.kit.retry import Backoff


class Flaky:
    """Fails `failures` times, then answers with the number of calls; records when each call came."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[float] = []  # monotonic times

    async def __call__(self) -> int:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise ValueError(f"failure {len(self.calls)}")
        return len(self.calls)


async def test_a_failure_is_retried_with_doubling_delays_and_each_retry_is_reported() -> None:
    flaky, told = Flaky(3), []
    assert await Backoff(0.02, max_s=0.05, attempts=5).call(flaky, lambda n, exc: told.append((n, str(exc)))) == 4
    assert told == [(1, "failure 1"), (2, "failure 2"), (3, "failure 3")]
    gaps = [b - a for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert all(gap >= 0.9 * delay for gap, delay in zip(gaps, (0.02, 0.04, 0.05), strict=True)), gaps
    assert Backoff(0.02, max_s=0.05).delay(1) == 0.02 and Backoff(0.02, max_s=0.05).delay(3) == 0.05


async def test_the_last_failure_propagates_once_the_attempts_are_spent() -> None:
    flaky, told = Flaky(10), []
    with pytest.raises(ValueError, match="failure 3"):
        await Backoff(0.001, attempts=3).call(flaky, lambda n, exc: told.append(n))
    assert len(flaky.calls) == 3 and told == [1, 2]
    once = Flaky(10)
    with pytest.raises(ValueError, match="failure 1"):
        await Backoff(0.001, attempts=1).call(once)
    assert len(once.calls) == 1


async def test_cancellation_is_never_retried() -> None:
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await Backoff(0.001, attempts=5).call(cancelled)
    assert calls == 1


async def test_the_polling_loop_survives_a_failing_pass_runs_again_when_busy_and_wakes_early() -> None:
    passes: list[str] = []

    async def step() -> bool:
        passes.append("pass")
        if len(passes) == 1:
            raise RuntimeError("a bad pass")
        return len(passes) == 2  # the second pass did work: the third follows at once

    loop = PollingLoop("test", 30.0, step, logging.getLogger("test"))
    loop.start()
    try:
        await asyncio.sleep(0.05)
        assert len(passes) == 1  # the failure was logged and the loop waits for its interval...
        loop.wake()  # ...unless woken
        for _ in range(100):
            if len(passes) >= 3:
                break
            await asyncio.sleep(0.01)
        assert len(passes) == 3
        await asyncio.sleep(0.05)
        assert len(passes) == 3  # idle again: nothing until the interval or a wake
    finally:
        await loop.stop()


async def test_the_polling_loop_stops_even_when_a_pass_swallows_the_cancellation() -> None:
    entered = asyncio.Event()

    async def step() -> bool:
        swallow = not entered.is_set()  # once: so that a loop that failed this test can still be torn down
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # what a careless library does mid-pass
            if not swallow:
                raise
        return True  # "busy": without the stop flag the loop would go straight into another pass

    loop = PollingLoop("test", 30.0, step, logging.getLogger("test"))
    loop.start()
    await asyncio.wait_for(entered.wait(), 5)
    stopping = asyncio.create_task(loop.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done == {stopping}, "the loop did not stop: its pass swallowed the cancellation and it went on"


async def test_stopping_lets_a_pass_in_progress_finish_instead_of_cancelling_it() -> None:
    entered, finished = asyncio.Event(), asyncio.Event()

    async def step() -> bool:
        entered.set()
        await asyncio.sleep(0.2)  # a transaction in flight
        finished.set()
        return False

    loop = PollingLoop("test", 30.0, step, logging.getLogger("test"))
    loop.start()
    await asyncio.wait_for(entered.wait(), 5)
    await loop.stop()
    assert finished.is_set(), "the pass was cancelled mid-way"
