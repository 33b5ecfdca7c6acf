"""What Warden publishes on `warden.control` (keyed by agent id) for gateways and agent runtimes to obey."""

from __future__ import annotations

import json
from datetime import datetime

QUARANTINED = "quarantined"
RELEASED = "released"


def control_record(agent_id: str, state: str, *, incident_id: int, rule: str, at: datetime, by: str) -> bytes:
    """The latest record per agent is its state (the topic is compacted): quarantined or released."""
    return json.dumps({"agent_id": agent_id, "state": state, "incident_id": incident_id, "rule": rule,
                       "at": at.isoformat(), "by": by}, sort_keys=True).encode()
