"""WARDEN_DATABASE_URL checked when settings load, so a wrong scheme or driver is one line naming the variable, not
SQLAlchemy's NoSuchModuleError or a missing psycopg module when the responder first connects."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

# The async drivers Warden ships (pyproject: aiosqlite, asyncpg), and the URL to write for each backend.
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite:///PATH", "postgresql": "postgresql+asyncpg://USER@HOST/DB"}


def check_database_url(url: str) -> str:
    """`url` unchanged if Warden can open it; else ValueError with the reason (never the password)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("is not a database URL (e.g. postgresql+asyncpg://USER@HOST/DB)") from None
    backend = parsed.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"unknown database {parsed.drivername!r}: use {' or '.join(ASYNC_DRIVERS.values())}")
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"unknown driver {parsed.drivername!r}: use {ASYNC_DRIVERS[backend]}") from None
    if not getattr(dialect, "is_async", False):
        raise ValueError(f"{parsed.drivername}:// names the synchronous driver {dialect.driver!r}; Warden needs "
                         f"the async one: {ASYNC_DRIVERS[backend]}")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(f"the driver of {parsed.drivername}:// is not installed ({exc.name})") from None
    return url
