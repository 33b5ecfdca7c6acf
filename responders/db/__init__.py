"""The incident database: one async engine per worker (SQLite embedded, PostgreSQL in production), migrated at start
by workers (under a lock) and by `warden db upgrade`; read-only engines for the commands that only read."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30.0  # SQLite: how long a writer waits for another's lock before "database is locked"
_MIGRATION_LOCK = 0x57A2DE4  # pg advisory lock id: workers starting together migrate one at a time


class DatabaseNotReady(Exception):
    """The database is missing, or its schema is not at this release's revision: `warden db upgrade` fixes it."""


def describe(url: str) -> str:
    """The URL as a command may print it: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> AsyncEngine:
    """An engine for `url`. SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE so writers queue, not fail."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection: SQLite has one writer, and writers that queue on its lock sleep in its busy handler (steps of
    # up to 100 ms); queued on the pool, the next one starts the moment the last one ends (bench/latency.py).
    engine = create_async_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S}, pool_size=1, max_overflow=0)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN
        cursor = dbapi_connection.cursor()
        # The busy timeout first, so that a write waits for a connection holding a lock (a worker restarting while
        # the old one still commits) instead of failing with "database is locked"; the switch to WAL (readers never
        # block the writer, nor it them) takes its lock without the busy handler, so it is retried.
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _wal(cursor, BUSY_TIMEOUT_S)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _wal(cursor: Any, wait_s: float = 30.0) -> None:
    """Switch the file to WAL (persistent: a no-op once done). Switching takes an exclusive lock without SQLite's
    busy handler, so processes opening a fresh file together (workers, `warden db upgrade`) retry it instead of
    failing with "database is locked"."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_read_only_engine(url: str) -> AsyncEngine:
    """An engine that cannot write: SQLite opened `mode=ro` (a missing file is DatabaseNotReady, never created),
    PostgreSQL sessions with `default_transaction_read_only`, so a read-only command cannot change anything."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if parsed.get_driver_name() == "asyncpg":
            return create_async_engine(url, pool_pre_ping=True, connect_args={
                "server_settings": {"default_transaction_read_only": "on"}})
        return create_async_engine(url, pool_pre_ping=True)
    path = parsed.database or ""
    if not path or path == ":memory:" or not Path(path).is_file():
        raise DatabaseNotReady(f"no database at {path or '(none)'}: run `warden db upgrade` to create it")
    return create_async_engine(parsed.set(database=f"file:{Path(path).resolve()}", query={
        **parsed.query, "mode": "ro", "uri": "true"}), connect_args={"timeout": 30})


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


async def migrate(engine: AsyncEngine) -> str | None:
    """Bring the schema to the newest Alembic revision (`upgrade head`) on the engine's own connection, one process
    at a time: a PostgreSQL advisory lock, on SQLite the write lock BEGIN IMMEDIATE takes. The revision before."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
        before: str | None = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
        await conn.run_sync(_upgrade)
    return before


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(_config(connection), "head")


def head_revision() -> str:
    """The schema revision this release's code reads and writes."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's Alembic revision (None: no schema yet); reads, never writes."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def check_current(engine: AsyncEngine) -> str:
    """The revision, when it is this release's; else DatabaseNotReady saying what to run."""
    found, head = await current_revision(engine), head_revision()
    if found is None:
        raise DatabaseNotReady("the database has no Warden schema: run `warden db upgrade`")
    if found != head:
        known = {r.revision for r in ScriptDirectory.from_config(_config()).walk_revisions()}
        if found not in known:
            raise DatabaseNotReady(f"the database is at revision {found}, newer than this release ({head}): "
                                   "use the release that migrated it")
        raise DatabaseNotReady(f"the database is at revision {found}, this release needs {head}: run "
                               "`warden db upgrade`")
    return found
