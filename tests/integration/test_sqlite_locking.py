"""SQLite, the embedded default, in WAL mode with a busy timeout (issue 30): a worker that starts (migrates and
writes) while another connection holds the write lock waits for it instead of failing "database is locked"."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import text

from responders.db import BUSY_TIMEOUT_S, make_engine, migrate


async def test_every_connection_is_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'warden.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == int(BUSY_TIMEOUT_S * 1000)
    finally:
        await engine.dispose()


async def test_a_restarting_worker_waits_for_a_held_write_lock_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'warden.db'}"
    old, new = make_engine(url), make_engine(url)
    try:
        await migrate(old)
        held = asyncio.Event()

        async def hold_the_write_lock() -> None:
            async with old.begin() as conn:  # BEGIN IMMEDIATE: the write lock, held for a second
                await conn.execute(text("CREATE TABLE held (x INTEGER)"))
                held.set()
                await asyncio.sleep(1.0)

        holder = asyncio.create_task(hold_the_write_lock())
        await held.wait()
        started = time.monotonic()
        await migrate(new)  # the restarted worker: migrations, then a write, both need the lock
        async with new.begin() as conn:
            await conn.execute(text("CREATE TABLE after_restart (x INTEGER)"))
        waited = time.monotonic() - started
        await holder
        assert waited >= 0.5, f"it did not wait for the lock ({waited:.2f}s): was the lock really held?"
    finally:
        await old.dispose()
        await new.dispose()
