"""One polling loop for every background pass (outbox, escalation, policy watch): survive errors, wake early."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

STOP_GRACE_S = 2.0  # a pass is a few database statements, or a send bounded by its own timeout


class PollingLoop:
    """Runs `step` every `interval_s`; again at once when it reports work done, or when `wake()` is called.

    A failing pass is logged and retried on the next tick: what it was doing is still recorded where it came from.
    """

    def __init__(self, name: str, interval_s: float, step: Callable[[], Awaitable[object]],
                 log: logging.Logger) -> None:
        self.name, self.interval_s, self.step, self.log = name, interval_s, step, log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Let a pass in progress finish (for at most `grace_s`), then stop; cancel it only past the grace. A pass
        cancelled mid-transaction can leave its database connection unreturned, holding SQLite's write lock after
        the engine is disposed (the `database is locked` of the next open in the same process)."""
        task, self._task = self._task, None
        if task is None:
            return
        # The flag as well as the cancel: a library that swallows the CancelledError mid-pass must not keep the
        # loop going for ever. asyncio.wait, not `await task` under suppress(CancelledError), so that a cancel
        # aimed at whoever is stopping the loop still reaches them.
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if not done:
            task.cancel()
            await asyncio.wait({task})

    async def _run(self) -> None:
        while not self._stopping:
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("%s: pass failed; retrying in %.1fs", self.name, self.interval_s)
                busy = False
            if busy:
                await asyncio.sleep(0)  # let others run between busy passes
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
