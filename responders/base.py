"""The responder interface the worker drives: one finding in, side effects after a durable record."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from warden.findings import Finding
from warden.web import RouteInstaller


class Responder(Protocol):
    """Handles findings from `warden.findings`. `handle` must be idempotent on `finding.finding_id`."""

    async def start(self) -> None: ...

    async def handle(self, finding: Finding) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class WebRoutes(Protocol):
    """A responder that serves HTTP routes (Slack's interactivity callback) on the worker's web server."""

    def route_installers(self) -> list[RouteInstaller]: ...
