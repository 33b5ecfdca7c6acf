"""A fresh incident database per test, on SQLite (a temp file) or PostgreSQL (a database made and dropped): empty, or
a copy of a template migrated once per test process (migrating each test's own took about 0.15 s of CPU apiece)."""

from __future__ import annotations

import shutil
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

from responders.db import MIGRATIONS, make_engine, migrate
from tests.support.pg_server import sqlalchemy_url

BACKENDS = ("sqlite", "postgresql")


@asynccontextmanager
async def database_url(backend: str, tmp_path: Path, postgres_admin_url: str,
                       template: str | None = None) -> AsyncIterator[str]:
    """A database for one test, empty or a copy of `template` (see Templates); its SQLAlchemy async URL.
    PostgreSQL is never skipped: unreachable fails."""
    if backend == "sqlite":
        path = tmp_path / "incidents.db"
        if template:
            shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"warden_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin(postgres_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        yield sqlalchemy_url(postgres_admin_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _admin(postgres_admin_url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(postgres_admin_url)
    except OSError as exc:
        raise RuntimeError(f"PostgreSQL is unreachable at {postgres_admin_url} ({exc})") from exc


class Templates:
    """One database per backend migrated to the newest schema, made on first use in this test process; each test's
    database is a copy of it (a file copy; PostgreSQL's CREATE DATABASE ... TEMPLATE)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._made: dict[tuple[str, str], str] = {}  # (backend, admin URL) -> file path or database name

    async def migrated(self, backend: str, postgres_admin_url: str) -> str:
        key = (backend, postgres_admin_url)
        if key not in self._made:
            if backend == "sqlite":
                template = str(self._folder / "migrated.db")
                url = f"sqlite+aiosqlite:///{template}"
            else:
                template = f"warden_template_{uuid.uuid4().hex[:12]}"
                admin = await _admin(postgres_admin_url)
                try:
                    await admin.execute(f'CREATE DATABASE "{template}"')
                finally:
                    await admin.close()
                url = sqlalchemy_url(postgres_admin_url, template)
            engine = make_engine(url)
            try:
                await migrate(engine)
            finally:
                await engine.dispose()  # a template must have no connection left when it is copied
            self._made[key] = template
        return self._made[key]

    async def drop(self) -> None:
        """Drop the PostgreSQL templates (a shared WARDEN_TEST_DATABASE_URL server keeps running after the suite)."""
        for (backend, admin_url), template in self._made.items():
            if backend == "postgresql":
                admin = await _admin(admin_url)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
                finally:
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
