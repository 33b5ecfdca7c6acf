"""`warden db upgrade`: the one command that migrates the incident database (workers also do, under a lock, at
start); every other command only reads it and refuses a schema that is not current."""

from __future__ import annotations

import asyncio

import click

from service.cli.failure import unreachable


@click.group()
def db() -> None:
    """Manage the incident database's schema."""


@db.command()
@click.option("--database-url", metavar="URL", help="The database to migrate [default: WARDEN_DATABASE_URL, else "
              "SQLite in WARDEN_DATA_DIR].")
def upgrade(database_url: str | None) -> None:
    """Create or migrate the schema to this release's revision (idempotent; one process at a time)."""
    from sqlalchemy.exc import DBAPIError

    from responders.db import describe, head_revision, make_engine, migrate
    from service.cli import _settings

    url = database_url or _settings().effective_database_url

    async def run() -> str | None:
        engine = make_engine(url)
        try:
            return await migrate(engine)
        finally:
            await engine.dispose()

    try:
        before = asyncio.run(run())
    except DBAPIError as exc:
        raise unreachable(f"the database {describe(url)}", exc.orig or exc) from None
    except OSError as exc:
        raise unreachable(f"the database {describe(url)}", exc) from None
    head = head_revision()
    if before == head:
        click.echo(f"database {describe(url)} is at revision {head}: nothing to do")
    else:
        click.echo(f"database {describe(url)} migrated from {before or 'empty'} to revision {head}")

