"""A message to a role the matrix names, through the incident's notifiers (the outbox), once per step."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from playbooks.actions.base import ActionFailed, StepContext, Unchecked


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["approver", "detector", "responder", "business_owner", "data_owner"] = "responder"
    message: str = Field(min_length=1, max_length=2000)


class Notify(Unchecked):
    """Records an outbox notification keyed by the step, so a step run twice notifies once."""

    name: ClassVar[str] = "notify"
    summary: ClassVar[str] = "Send a message to a role of the workflow (approver, responder, data owner, ...)."
    Params: ClassVar[type[BaseModel]] = Params
    idempotent: ClassVar[bool] = True
    uses_token: ClassVar[bool] = False

    def describe(self, params: Any) -> str:
        return f"notify the {params.role}"

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        owner = getattr(ctx.incident.owners, params.role)
        if owner is None:
            raise ActionFailed(f"the workflow names no {params.role}", retryable=False)
        first = await ctx.services.notify(ctx.key, ctx.incident.id, owner, params.message)
        return {"to": owner.id, "role": params.role, "recorded": "now" if first else "by an earlier run"}
