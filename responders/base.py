"""The responder interface the worker drives: one finding in, side effects after a durable record."""

from __future__ import annotations

from typing import Protocol

from warden.findings import Finding


class Responder(Protocol):
    """Handles findings from `warden.findings`. `handle` must be idempotent on `finding.finding_id`."""

    async def start(self) -> None: ...

    async def handle(self, finding: Finding) -> None: ...

    async def stop(self) -> None: ...
