"""A fresh incident database per test, on SQLite (a temp file) or PostgreSQL (a database made and dropped)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from tests.pg_server import sqlalchemy_url

BACKENDS = ("sqlite", "postgresql")


@asynccontextmanager
async def database_url(backend: str, tmp_path: Path, postgres_admin_url: str) -> AsyncIterator[str]:
    """An empty database for one test; its SQLAlchemy async URL. PostgreSQL is never skipped: unreachable fails."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'incidents.db'}"
        return
    name = f"warden_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(postgres_admin_url)
    except OSError as exc:
        raise RuntimeError(f"PostgreSQL is unreachable at {postgres_admin_url} ({exc})") from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield sqlalchemy_url(postgres_admin_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
