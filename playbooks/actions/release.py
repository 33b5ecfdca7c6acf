"""Lifting a quarantine: not a playbook step but a ledger entry the approver requests (button or CLI)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from playbooks.actions.base import NoParams, StepContext, Unchecked
from playbooks.actions.control import RELEASED, publish_state


class Release(Unchecked):
    """Publishes `released` for the agent on warden.control, by the owner who asked."""

    name: ClassVar[str] = "release"
    summary: ClassVar[str] = "Publish the agent as released on warden.control."
    Params: ClassVar[type[BaseModel]] = NoParams
    idempotent: ClassVar[bool] = True
    uses_token: ClassVar[bool] = False

    def describe(self, params: Any) -> str:
        return "release the agent's quarantine (warden.control)"

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        return await publish_state(ctx, RELEASED)
