"""Quarantine: tell gateways and agent runtimes, on the compacted `warden.control`, to stop the agent."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from playbooks.actions.base import NoParams, StepContext, Unchecked
from playbooks.actions.control import QUARANTINED, publish_state


class QuarantineAgent(Unchecked):
    """Publishes `quarantined` for the agent; lifted only by a release its approver asks for."""

    name: ClassVar[str] = "quarantine_agent"
    summary: ClassVar[str] = "Publish the agent as quarantined on warden.control until its approver releases it."
    Params: ClassVar[type[BaseModel]] = NoParams
    idempotent: ClassVar[bool] = True
    uses_token: ClassVar[bool] = False

    def describe(self, params: Any) -> str:
        return "quarantine the agent (warden.control)"

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        return await publish_state(ctx, QUARANTINED)
