"""Start-up failures that a setting causes but validation cannot see (a port taken, a database that refuses), so
the CLI reports them as one line naming the variable and exits 2, instead of a stack trace long after start."""

from __future__ import annotations

import errno
import socket


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
