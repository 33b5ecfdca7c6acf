"""The revocation list: the credential id on the compacted `warden.revocations`, for gateways to refuse."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel

from playbooks.actions.base import ActionFailed, NoParams, StepContext, Unchecked


class RevocationList(Unchecked):
    """Publishes the credential id (never the token). Idempotent: keyed by credential id."""

    name: ClassVar[str] = "revocation_list"
    summary: ClassVar[str] = "Publish the credential id on warden.revocations for gateways to refuse."
    Params: ClassVar[type[BaseModel]] = NoParams
    idempotent: ClassVar[bool] = True
    uses_token: ClassVar[bool] = False

    def describe(self, params: Any) -> str:
        return "add the credential id to the revocation list (warden.revocations)"

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        cred = ctx.credential
        if cred is None or not cred.id:
            raise ActionFailed("the finding names no credential id to list", retryable=False)
        value = json.dumps({"credential_id": cred.id, "issuer": cred.issuer, "incident_id": ctx.incident.id,
                            "agent_id": ctx.incident.agent_id, "rule": ctx.incident.rule}, sort_keys=True)
        await ctx.services.publish(ctx.services.revocations_topic, cred.id.encode(), value.encode())
        return {"credential_id": cred.id, "topic": ctx.services.revocations_topic}
