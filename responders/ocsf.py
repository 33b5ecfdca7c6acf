"""Findings as OCSF Detection Findings (class 2004), the schema AWS Security Lake and most SIEMs ingest, and timeline
entries as plain JSON, for the optional `warden.audit` export. Pure: rows in, JSON-ready dicts out. The mapping is
documented in docs/audit.md; every string was redacted when it was recorded.

OCSF 1.9: the agent is an `ai_agent` (the `ai_operation` profile), and every record carries the `record_integrity`
profile's `attestation_list` with the timeline entry's place in Warden's hash chain: `chain_uid` the incident's chain,
`fingerprint` the entry's SHA-256 hash, `prev_event` the entry before it (its hash), so a SIEM can follow and check
the chain on its own copy. The fingerprint is Warden's chain hash of the entry's canonical content (docs/audit.md:
version, chain, position, previous hash and content), not a hash of the OCSF record's own serialization; it is
recomputed from the exported timeline record's fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any

OCSF_VERSION = "1.9.0"
PROFILES = ["ai_operation", "record_integrity"]
SHA256 = {"algorithm_id": 3, "algorithm": "SHA-256"}  # OCSF fingerprint.algorithm_id 3
AUTHORITY = "warden"
DETECTION_FINDING = 2004
FINDINGS_CATEGORY = 2
SEVERITY_IDS = {"low": 2, "medium": 3, "high": 4, "critical": 5}
STATUS_IDS = {"open": 1, "acknowledged": 2, "false_positive": 3, "resolved": 4}  # OCSF status_id
STATUS_NAMES = {1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved"}
PRODUCT = {"name": "Warden", "vendor_name": "Warden", "feature": {"name": "agent-scope detection"}}


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def attestation(entry: dict[str, Any], incident_id: int) -> dict[str, Any]:
    """The record_integrity attestation of one timeline entry (`responders.trail.entry_json`): its place in the
    incident's hash chain."""
    chain = f"warden-incident-{incident_id}"
    found: dict[str, Any] = {
        "uid": f"{chain}:{entry['seq']}", "chain_uid": chain, "authority_uid": AUTHORITY,
        "fingerprint": {**SHA256, "value": entry["hash"]},
    }
    if entry["seq"] > 1:  # absent on the genesis entry of a chain
        found["prev_event"] = {"uid": f"{chain}:{entry['seq'] - 1}",
                               "fingerprint": {**SHA256, "value": entry["prev_hash"]}}
    return found


def ai_agent(agent_id: str) -> dict[str, Any]:
    """The acting agent as an OCSF `ai_agent`: its id as the matrix names it; the framework is not known here."""
    return {"uid": agent_id, "name": agent_id, "type_id": 0, "type": "Unknown"}


def detection_finding(*, finding_id: str, event_id: str, rule: str, severity: str, ts: datetime,
                      recorded_at: datetime, evidence: dict[str, Any], grouped: bool,
                      incident: dict[str, Any], entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """One finding as an OCSF Detection Finding: activity Create (1) when it opened its incident, Update (2) when
    it joined one. `incident` is the incident as the trail reads it (`responders.trail.incident_json`), `entry` the
    timeline entry that recorded the finding (`entry_json`), whose chain link the record carries."""
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
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": finding_id, "profiles": list(PROFILES),
                     "correlation_uid": f"warden-incident-{incident['id']}", "log_name": "warden.audit"},
        "finding_info": {
            "uid": finding_id, "title": incident["title"], "types": [rule], "created_time": _ms(recorded_at),
            "first_seen_time": _ms(ts), "last_seen_time": _ms(ts),
            "analytic": {"uid": rule, "name": rule, "type_id": 1, "type": "Rule"},
            "related_events": [{"uid": event_id}],
            "attacks": [], "tags": [{"name": t} for t in incident.get("tags", [])],
        },
        "actor": {"user": {"uid": incident["agent_id"], "type": "Agent", "type_id": 99}},
        "ai_agent": ai_agent(incident["agent_id"]),
        **({"attestation_list": [attestation(entry, incident["id"])]} if entry is not None else {}),
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
    return {"type": "warden.timeline", "incident_id": incident_id, **entry,
            "attestation_list": [attestation(entry, incident_id)]}
