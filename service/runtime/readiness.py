"""/readyz: whether this worker can do its work now (the broker answers, its ingest joined the consumer group, the
database answers, a policy is live), so Kubernetes routes to and keeps only workers that can. /healthz stays the
cheap liveness check: a worker whose broker is down is not ready, but restarting it would not help."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.runtime.ingest.loop import BatchIngest
from service.runtime.policy_holder import PolicyHolder

log = logging.getLogger("warden.readiness")
CHECK_TIMEOUT_S = 2.0  # each check; a probe's own timeout is 1 s by default in Kubernetes, so keep probes at >= 3


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class Readiness:
    """The checks behind /readyz, each bounded in time and run together; a failure says what, never a secret."""

    def __init__(self, ingest: BatchIngest, holder: PolicyHolder, engine: AsyncEngine | None) -> None:
        self._ingest, self._holder, self._engine = ingest, holder, engine

    async def checks(self) -> dict[str, Check]:
        names = ["broker", "group", "database", "policy"]
        probes: list[Callable[[], Awaitable[Check]]] = [self._broker, self._group, self._database, self._policy]
        results = await asyncio.gather(*(_bounded(probe) for probe in probes))
        return dict(zip(names, results, strict=True))

    async def _broker(self) -> Check:
        await self._ingest.consumer.topics()  # a metadata request: raises when no broker answers
        return Check(True, "metadata answered")

    async def _group(self) -> Check:
        if not self._ingest.joined:
            return Check(False, f"the ingest has not joined consumer group {self._ingest.group} yet")
        partitions = len(self._ingest.assignment())
        return Check(True, f"joined {self._ingest.group}: {partitions} input partition(s) assigned")

    async def _database(self) -> Check:
        if self._engine is None:
            return Check(True, "no database (this responder keeps none)")
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return Check(True, f"{self._engine.dialect.name} answered")

    async def _policy(self) -> Check:
        return Check(True, f"sha256 {self._holder.current.sha256[:12]}")

    def install(self, app: web.Application) -> None:
        app.router.add_get("/readyz", self._handle)

    async def _handle(self, _: web.Request) -> web.Response:
        results = await self.checks()
        ready = all(c.ok for c in results.values())
        body = {"ready": ready, "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in results.items()}}
        return web.json_response(body, status=200 if ready else 503)


async def _bounded(probe: Callable[[], Awaitable[Check]]) -> Check:
    try:
        return await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return Check(False, f"no answer within {CHECK_TIMEOUT_S:.0f}s")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the class name says which, no message
        return Check(False, f"failed: {type(exc).__name__}")  # messages may carry a URL with its password
