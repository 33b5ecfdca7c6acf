"""Where `warden incidents|incident|audit` read and act: the incident API (WARDEN_API_URL and a bearer token, so the
actor is the token's owner), or, for break-glass only, the database named by an explicit `--database-url` (read-only
for reads; actions recorded as break-glass). Never a database the command was not told about."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import click

from responders.owner_actions import BREAK_GLASS, Outcome, Result
from responders.trail import Filters
from service.cli.exits import Exit
from service.cli.failure import Failure, unreachable
from warden.contract.actors import Actor

API_URL = "WARDEN_API_URL"
API_TOKEN = "WARDEN_API_TOKEN"  # the variable's name, not a token
_TIMEOUT_S = 30.0
T = TypeVar("T")


class Service(Protocol):
    """What the incident commands need; `source` names what was read, for every command's output."""

    @property
    def source(self) -> str: ...

    async def incidents(self, f: Filters, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]: ...

    async def incident(self, incident_id: int) -> dict[str, Any] | None: ...

    async def verify(self) -> dict[str, Any]: ...

    async def act(self, incident_id: int, action: str) -> Outcome: ...

    async def silences(self, expired: bool) -> list[dict[str, Any]]: ...

    async def add_silence(self, spec: dict[str, Any]) -> dict[str, Any]: ...

    async def expire_silence(self, silence_id: int) -> tuple[Result, dict[str, Any]]: ...


@dataclass
class ApiService:
    """The incident API; every call carries the bearer token, which names the owner acting."""

    url: str
    token: str
    http: Any  # aiohttp.ClientSession, imported lazily: `warden schema` need not load it

    @property
    def source(self) -> str:
        return f"incident API {self.url}"

    async def _call(self, method: str, path: str, params: dict[str, str] | None = None,
                    json_body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, JSON object); a 401 is exit 2, no answer, a 5xx or an answer that is not JSON exit 4."""
        import aiohttp

        try:
            async with self.http.request(method, f"{self.url}{path}", params=params, json=json_body,
                                         headers={"Authorization": f"Bearer {self.token}"}) as r:
                body = await r.json(content_type=None) if r.content_type == "application/json" else None
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise unreachable(f"the incident API at {self.url}", exc) from None
        if status == 401:
            raise Failure(f"the incident API at {self.url} refused the token in {API_TOKEN} (401)", Exit.INVALID_INPUT)
        if status >= 500 or not isinstance(body, dict):
            raise unreachable(f"the incident API at {self.url}", RuntimeError(
                f"HTTP {status} on {method} {path}" + ("" if isinstance(body, dict) else
                                                       ", not a JSON answer: is this Warden's incident API?")))
        return status, body

    async def incidents(self, f: Filters, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        params = {k: v for k, v in (("status", f.status), ("workflow", f.workflow), ("severity", f.severity),
                                    ("tier", f.tier), ("since", f.since.isoformat() if f.since else None),
                                    ("group", str(f.group) if f.group is not None else None)) if v}
        status, body = await self._call("GET", "/incidents", {**params, "limit": str(limit), "offset": str(offset)})
        if status != 200:
            raise Failure(f"the incident API at {self.url}: {body.get('error')}", Exit.INVALID_INPUT)
        return int(body["total"]), list(body["items"])

    async def incident(self, incident_id: int) -> dict[str, Any] | None:
        status, body = await self._call("GET", f"/incidents/{incident_id}")
        return None if status == 404 else dict(body)

    async def verify(self) -> dict[str, Any]:
        _, body = await self._call("GET", "/audit/verify")
        return dict(body)

    async def act(self, incident_id: int, action: str) -> Outcome:
        status, body = await self._call("POST", f"/incidents/{incident_id}/{action}")
        result = {200: Result.done, 403: Result.forbidden, 404: Result.not_found}.get(status, Result.conflict)
        return Outcome(result, body.get("message") or body.get("error") or f"HTTP {status}", body.get("status"))

    async def silences(self, expired: bool) -> list[dict[str, Any]]:
        _, body = await self._call("GET", "/silences", {"expired": "true"} if expired else None)
        return list(body.get("items", []))

    async def add_silence(self, spec: dict[str, Any]) -> dict[str, Any]:
        status, body = await self._call("POST", "/silences", json_body=spec)
        if status != 201:
            raise Failure(f"the incident API at {self.url}: {body.get('error')}", Exit.INVALID_INPUT)
        return dict(body)

    async def expire_silence(self, silence_id: int) -> tuple[Result, dict[str, Any]]:
        status, body = await self._call("POST", f"/silences/{silence_id}/expire")
        return {200: Result.done, 404: Result.not_found}.get(status, Result.conflict), dict(body)


@dataclass
class DatabaseService:
    """Break-glass: the database itself, read through a read-only engine; an action needs `--as OWNER` and is
    recorded with the identity break-glass:<unix user>."""

    url: str
    owner_id: str | None = None

    @property
    def source(self) -> str:
        from responders.db import describe

        return f"database {describe(self.url)} (break-glass)"

    @asynccontextmanager
    async def _engine(self, *, write: bool) -> AsyncIterator[Any]:
        from sqlalchemy.exc import DBAPIError

        from responders.db import DatabaseNotReady, check_current, describe, make_engine, make_read_only_engine

        try:
            engine = make_engine(self.url) if write else make_read_only_engine(self.url)
        except DatabaseNotReady as exc:
            raise Failure(f"database {describe(self.url)}: {exc}", Exit.UNREACHABLE) from None
        try:
            try:
                await check_current(engine)
            except DatabaseNotReady as exc:
                raise Failure(f"database {describe(self.url)}: {exc}", Exit.UNREACHABLE) from None
            yield engine
        except DBAPIError as exc:
            raise unreachable(f"the database {describe(self.url)}", exc.orig or exc) from None
        except OSError as exc:
            raise unreachable(f"the database {describe(self.url)}", exc) from None
        finally:
            await engine.dispose()

    async def incidents(self, f: Filters, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        from responders.trail import Trail

        async with self._engine(write=False) as engine:
            return await Trail(engine).incidents(f, limit=limit, offset=offset)

    async def incident(self, incident_id: int) -> dict[str, Any] | None:
        from responders.trail import Trail

        async with self._engine(write=False) as engine:
            return await Trail(engine).incident(incident_id)

    async def verify(self) -> dict[str, Any]:
        from responders.trail import Trail

        async with self._engine(write=False) as engine:
            return (await Trail(engine).verify()).as_json()

    async def act(self, incident_id: int, action: str) -> Outcome:
        from responders.notifiers.registry import notifier_names
        from responders.owner_actions import act
        from responders.store.common import utcnow
        from responders.store.rooms import Store
        from service.cli import _settings

        if self.owner_id is None:
            raise Failure("break-glass actions name the owner you act for: add --as OWNER", Exit.INVALID_INPUT)
        async with self._engine(write=True) as engine:
            settings = _settings()  # the notifiers the responder is told through, as the workers would
            store = Store.build(engine, notifier_names(settings.notifiers, dict(settings)))
            return await act(store, incident_id, action, self.owner_id,
                             actor=Actor(BREAK_GLASS, getpass.getuser()), now=utcnow())


    async def silences(self, expired: bool) -> list[dict[str, Any]]:
        from responders.silences import Silences
        from responders.store.common import utcnow

        async with self._engine(write=False) as engine:
            now = utcnow()
            return [v.as_json(now) for v in await Silences(engine).query(now, expired=expired)]

    async def add_silence(self, spec: dict[str, Any]) -> dict[str, Any]:
        from responders.silences import SilenceError, Silences
        from responders.store.common import utcnow

        if self.owner_id is None:
            raise Failure("break-glass silences name the owner they are for: add --as OWNER", Exit.INVALID_INPUT)
        async with self._engine(write=True) as engine:
            now = utcnow()
            starts = datetime.fromisoformat(spec["starts_at"]) if spec.get("starts_at") else now
            ends = datetime.fromisoformat(spec["ends_at"])
            try:
                made = await Silences(engine).add(
                    spec["matchers"], starts_at=starts, ends_at=ends, comment=spec["comment"],
                    author=spec.get("author") or self.owner_id, identity=f"{BREAK_GLASS}:{getpass.getuser()}",
                    now=now)
            except SilenceError as exc:
                raise Failure(str(exc), Exit.INVALID_INPUT) from None
            return made.as_json(now)

    async def expire_silence(self, silence_id: int) -> tuple[Result, dict[str, Any]]:
        from responders.silences import Silences
        from responders.store.common import utcnow

        if self.owner_id is None:
            raise Failure("break-glass changes name the owner you act for: add --as OWNER", Exit.INVALID_INPUT)
        async with self._engine(write=True) as engine:
            now, silences = utcnow(), Silences(engine)
            before = await silences.get(silence_id)
            if before is None:
                return Result.not_found, {"error": f"silence #{silence_id} does not exist"}
            if before.state(now) == "expired":
                return Result.conflict, {"error": f"silence #{silence_id} has expired already"}
            after = await silences.expire(silence_id, identity=f"{BREAK_GLASS}:{getpass.getuser()}",
                                          actor=self.owner_id, now=now)
            assert after is not None
            return Result.done, after.as_json(now)


@asynccontextmanager
async def connect(database_url: str | None, owner_id: str | None) -> AsyncIterator[Service]:
    """The API from WARDEN_API_URL and WARDEN_API_TOKEN, or the break-glass database when `--database-url` is given;
    neither is a usage error (exit 2) that says how to set one."""
    if database_url:
        yield DatabaseService(database_url, owner_id)
        return
    if owner_id is not None:
        raise Failure("--as is for break-glass with --database-url; through the incident API you act as the owner "
                      f"of the token in {API_TOKEN}", Exit.INVALID_INPUT)
    url, token = os.environ.get(API_URL, "").rstrip("/"), os.environ.get(API_TOKEN, "")
    if not url:
        raise Failure(f"set {API_URL} (and {API_TOKEN}) to use the incident API, or give --database-url for "
                      "break-glass access to the database", Exit.INVALID_INPUT)
    if not token:
        raise Failure(f"set {API_TOKEN}: the incident API acts as the owner of that token", Exit.INVALID_INPUT)
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S)) as http:
        yield ApiService(url, token, http)


def as_utc(since: datetime | None) -> datetime | None:
    """A naive --since is UTC."""
    if since is None or since.tzinfo is not None:
        return since
    return since.replace(tzinfo=UTC)


def database_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--database-url`: break-glass, read the database itself instead of the incident API."""
    return click.option("--database-url", metavar="URL", help="Break-glass: read (or act on) this database directly "
                        "instead of the incident API at WARDEN_API_URL.")(command)


def with_service(database_url: str | None, owner_id: str | None,
                 work: Callable[[Service], Awaitable[T]]) -> tuple[T, str]:
    """Run `work` against the API or the break-glass database; its result and the source it read."""

    async def run() -> tuple[T, str]:
        async with connect(database_url, owner_id) as service:
            return await work(service), service.source

    return asyncio.run(run())
