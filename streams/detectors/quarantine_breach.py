"""quarantine_breach: activity from an agent quarantined on warden.control; the containment did not take effect."""

from __future__ import annotations

from streams.detectors.base import Context, RuleInfo, build_finding, no_lookback, stateless
from warden.contract.findings import Finding
from warden.contract.matrix import Severity

info = RuleInfo(
    id="quarantine_breach",
    title="Activity from a quarantined agent: containment did not take effect",
    default_severity=Severity.critical,
    frameworks=("OWASP-ASI10", "OWASP-LLM06", "NIST-AI-RMF:MANAGE"),
)


new_state = stateless
lookback = no_lookback


def detect(ctx: Context, state: None) -> list[Finding]:
    ev = ctx.event
    mark = ctx.quarantined.get(ev.agent.id)
    if mark is None or ev.ts < mark.since:  # what the agent did before its quarantine is no breach
        return []
    evidence = {"agent": ev.agent.id, "kind": ev.kind.value, "quarantined_since": mark.since.isoformat()}
    if mark.incident_id is not None:
        evidence["quarantined_by_incident"] = str(mark.incident_id)
    if ev.tool is not None:
        evidence["tool"] = ev.tool.name
    finding = build_finding(ctx, info, ev.agent.id, evidence, severity=Severity.critical)
    return [finding] if finding else []
