"""A fresh incident database per test, on SQLite (a temp file) or PostgreSQL (a database made and dropped)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from responders.db import MIGRATIONS
from tests.support.pg_server import sqlalchemy_url

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


def upgrade_to(connection: Connection, revision: str) -> None:
    """Migrate a database only as far as `revision`: to write rows as an older release did, then migrate on."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def insert_old_incident(conn: AsyncConnection, incident_id: int, at: datetime) -> None:
    """One open incident row with the columns every release since 0002 has."""
    await conn.execute(text(
        "INSERT INTO incidents (id, key, status, rule, severity, title, agent_id, target, frameworks, tags, "
        "evidence, owners, policy_sha256, count, first_seen, last_seen, opened_at, updated_at, "
        "escalation_step) VALUES (:id, 'k', 'open', 'r', 'high', 't', 'a', 'x', '[]', '[]', '{}', '{}', "
        "'sha', 1, :at, :at, :at, :at, 0)"), {"id": incident_id, "at": at})
