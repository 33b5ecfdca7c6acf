"""Lifting a quarantine: not a playbook step but a ledger entry the approver requests (button or CLI)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from playbooks.actions.base import StepContext
from playbooks.actions.control import RELEASED, control_record
from warden.contract.matrix import Matrix


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Release:
    """Publishes `released` for the agent on warden.control. Idempotent, like the quarantine it lifts."""

    name: ClassVar[str] = "release"
    summary: ClassVar[str] = "Publish the agent as released on warden.control."
    Params: ClassVar[type[BaseModel]] = Params
    idempotent: ClassVar[bool] = True
    uses_token: ClassVar[bool] = False

    def check(self, params: Any, matrix: Matrix) -> list[tuple[str, str]]:
        return []

    def describe(self, params: Any) -> str:
        return "release the agent's quarantine (warden.control)"

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        inc = ctx.incident
        by = ctx.decided_by or "unknown"
        value = control_record(inc.agent_id, RELEASED, incident_id=inc.id, rule=inc.rule, at=ctx.now, by=by)
        await ctx.services.publish(ctx.services.control_topic, inc.agent_id.encode(), value)
        return {"agent": inc.agent_id, "released_by": by}
