"""The responder interface the worker drives: one finding in, side effects after a durable record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from aiohttp import web

from warden.contract.findings import Finding

# Adds routes (Slack's interactivity callback) to the worker's web server.
RouteInstaller = Callable[[web.Application], None]


class Responder(Protocol):
    """Handles findings from `warden.findings`. `handle` must be idempotent on `finding.finding_id`."""

    async def start(self) -> None: ...

    async def handle(self, finding: Finding) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class WebRoutes(Protocol):
    """A responder that serves HTTP routes (Slack's interactivity callback) on the worker's web server."""

    def route_installers(self) -> list[RouteInstaller]: ...
