"""Row locks on PostgreSQL, as the tests of workers sharing a database see them: a call that must skip a row another
worker holds locked, never wait for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import suppress
from typing import TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
# Backends waiting for a lock this connection's transaction holds (pg_locks is live, not a per-transaction snapshot).
WAITING_ON_ME = text("SELECT count(*) FROM pg_locks l "
                     "WHERE NOT l.granted AND pg_backend_pid() = ANY(pg_blocking_pids(l.pid))")
# The outer bound, should the probe above miss a wait: a skipping query returns in milliseconds, a waiting one never.
BOUND_S = 30.0


async def without_waiting(holder: AsyncSession, call: Awaitable[T], what: str) -> T:
    """`call`'s result; fails as soon as it waits for a lock `holder` holds, or after BOUND_S if it never returns."""
    task = asyncio.ensure_future(call)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_S
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.05)
            if done:
                return task.result()
            if await holder.scalar(WAITING_ON_ME):
                pytest.fail(f"{what} waited for a row another worker holds locked instead of skipping it")
            if loop.time() > deadline:
                pytest.fail(f"{what} did not return within {BOUND_S}s while another worker held one row locked")
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
