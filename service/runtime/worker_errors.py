"""Start-up failures that a setting causes but validation cannot see (a port taken, a database that refuses), so
the CLI reports them as one line naming the variable and exits 2, instead of a stack trace long after start."""

from __future__ import annotations

import asyncio
import errno
import socket

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine


class SettingUnusable(RuntimeError):
    """A valid setting that cannot be used on this machine now; the message starts with the variable's name."""


def check_bind(host: str, port: int, variable: str = "WARDEN_WEB_BIND") -> None:
    """Fail at once if `host:port` cannot be listened on (in use, or not an address of this machine), before the
    broker, the database and faust are started: the HTTP server comes up last."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SettingUnusable(f"{variable}: cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            reason = "is in use by another process" if in_use else f"cannot be bound ({exc.strerror})"
            raise SettingUnusable(f"{variable}: {host}:{port} {reason}") from None


async def check_database(engine: AsyncEngine, timeout_s: float = 10.0, variable: str = "WARDEN_DATABASE_URL") -> None:
    """Fail at once, in one line, if the state of record does not answer: otherwise faust and the broker start and
    the responder fails inside them, in thousands of log lines and no exit."""
    where = engine.url.render_as_string(hide_password=True)
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TimeoutError:
        raise SettingUnusable(f"{variable}: {where} did not answer within {timeout_s:.0f}s") from None
    except (OSError, SQLAlchemyError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        raise SettingUnusable(f"{variable}: cannot connect to {where} ({type(cause).__name__})") from None
