"""Findings as OCSF Detection Findings (class 2004), the schema AWS Security Lake and most SIEMs ingest, and timeline
entries as plain JSON, for the optional `warden.audit` export. Pure: rows in, JSON-ready dicts out. The mapping is
documented in docs/audit.md; every string was redacted when it was recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

OCSF_VERSION = "1.3.0"
DETECTION_FINDING = 2004
FINDINGS_CATEGORY = 2
SEVERITY_IDS = {"low": 2, "medium": 3, "high": 4, "critical": 5}
STATUS_IDS = {"open": 1, "acknowledged": 2, "false_positive": 3, "resolved": 4}  # OCSF status_id
STATUS_NAMES = {1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved"}
PRODUCT = {"name": "Warden", "vendor_name": "Warden", "feature": {"name": "agent-scope detection"}}


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def detection_finding(*, finding_id: str, event_id: str, rule: str, severity: str, ts: datetime,
                      recorded_at: datetime, evidence: dict[str, Any], grouped: bool,
                      incident: dict[str, Any]) -> dict[str, Any]:
    """One finding as an OCSF Detection Finding: activity Create (1) when it opened its incident, Update (2) when
    it joined one. `incident` is the incident as the trail reads it (`responders.trail.incident_json`)."""
    activity_id = 2 if grouped else 1
    status_id = STATUS_IDS.get(incident["status"], 99)
    owners = incident.get("owners") or {}
    return {
        "class_uid": DETECTION_FINDING, "class_name": "Detection Finding",
        "category_uid": FINDINGS_CATEGORY, "category_name": "Findings",
        "activity_id": activity_id, "activity_name": "Update" if grouped else "Create",
        "type_uid": DETECTION_FINDING * 100 + activity_id,
        "severity_id": SEVERITY_IDS.get(severity, 99), "severity": severity.capitalize(),
        "status_id": status_id, "status": STATUS_NAMES.get(status_id, incident["status"]),
        "time": _ms(recorded_at),
        "message": incident["title"],
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": finding_id,
                     "correlation_uid": f"warden-incident-{incident['id']}", "log_name": "warden.audit"},
        "finding_info": {
            "uid": finding_id, "title": incident["title"], "types": [rule], "created_time": _ms(recorded_at),
            "first_seen_time": _ms(ts), "last_seen_time": _ms(ts),
            "analytic": {"uid": rule, "name": rule, "type_id": 1, "type": "Rule"},
            "related_events": [{"uid": event_id}],
            "attacks": [], "tags": [{"name": t} for t in incident.get("tags", [])],
        },
        "actor": {"user": {"uid": incident["agent_id"], "type": "Agent", "type_id": 99}},
        "resources": [{"uid": incident["target"], "type": "target", "name": incident["target"]}],
        "evidences": [{"data": evidence}],
        "risk_level": severity.capitalize(), "risk_level_id": SEVERITY_IDS.get(severity, 0) - 1,
        "unmapped": {
            "workflow": incident["workflow"], "frameworks": incident["frameworks"],
            "policy_sha256": incident["policy_sha256"], "incident_id": incident["id"],
            "responder": (owners.get("responder") or {}).get("id"),
            "approver": (owners.get("approver") or {}).get("id"),
        },
    }


def timeline_record(entry: dict[str, Any], incident_id: int) -> dict[str, Any]:
    """A timeline entry as exported: the entry as the API shows it, with its incident and its chain hashes, so a
    SIEM can check the chain on its own copy."""
    return {"type": "warden.timeline", "incident_id": incident_id, **entry}
