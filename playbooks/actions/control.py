"""What Warden publishes on `warden.control` (keyed by agent id) for gateways and agent runtimes to obey."""

from __future__ import annotations

import json
from datetime import datetime

from playbooks.actions.base import StepContext

QUARANTINED = "quarantined"
RELEASED = "released"


def control_record(agent_id: str, state: str, *, incident_id: int, rule: str, at: datetime, by: str) -> bytes:
    """The latest record per agent is its state (the topic is compacted): quarantined or released."""
    return json.dumps({"agent_id": agent_id, "state": state, "incident_id": incident_id, "rule": rule,
                       "at": at.isoformat(), "by": by}, sort_keys=True).encode()


async def publish_state(ctx: StepContext, state: str) -> dict[str, str]:
    """Publish the incident's agent in `state`, by whoever let the step run. Idempotent: keyed by agent, so the
    same state published again changes nothing a consumer sees."""
    inc = ctx.incident
    by = ctx.decided_by or "warden"
    value = control_record(inc.agent_id, state, incident_id=inc.id, rule=inc.rule, at=ctx.now, by=by)
    await ctx.services.publish(ctx.services.control_topic, inc.agent_id.encode(), value)
    return {"agent": inc.agent_id, "state": state, "by": by, "topic": ctx.services.control_topic}
