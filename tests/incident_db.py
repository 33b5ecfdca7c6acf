"""A fresh incident database per test, on SQLite (a temp file) or PostgreSQL (a database made and dropped)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

# PostgreSQL runs on every dev machine and in CI (trust auth). A test run never skips it: unreachable is an error.
POSTGRES_ADMIN_URL = os.environ.get("WARDEN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@asynccontextmanager
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database for one test; its SQLAlchemy async URL."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'incidents.db'}"
        return
    name = f"warden_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    except OSError as exc:
        raise RuntimeError(
            f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL} ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        ) from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
