"""Quarantine: tell gateways and agent runtimes, on the compacted `warden.control`, to stop the agent."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from playbooks.actions.base import StepContext
from playbooks.actions.control import QUARANTINED, control_record
from warden.contract.matrix import Matrix


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuarantineAgent:
    """Publishes `quarantined` for the agent. Idempotent: the record is keyed by agent, so a second publish of the
    same state changes nothing a consumer sees."""

    name: ClassVar[str] = "quarantine_agent"
    summary: ClassVar[str] = "Publish the agent as quarantined on warden.control until its approver releases it."
    Params: ClassVar[type[BaseModel]] = Params
    idempotent: ClassVar[bool] = True
    uses_token: ClassVar[bool] = False

    def check(self, params: Any, matrix: Matrix) -> list[tuple[str, str]]:
        return []

    def describe(self, params: Any) -> str:
        return "quarantine the agent (warden.control)"

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        inc = ctx.incident
        value = control_record(inc.agent_id, QUARANTINED, incident_id=inc.id, rule=inc.rule, at=ctx.now,
                               by=ctx.decided_by or "warden")
        await ctx.services.publish(ctx.services.control_topic, inc.agent_id.encode(), value)
        return {"agent": inc.agent_id, "topic": ctx.services.control_topic}
