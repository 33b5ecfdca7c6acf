"""unowned_agent: an event from an agent that no workflow lists; routed to the default security owner (ASI10)."""

from __future__ import annotations

from streams.detectors.base import Context, RuleInfo, build_finding, no_lookback, stateless
from warden.contract.findings import Finding
from warden.contract.matrix import Severity

info = RuleInfo(
    id="unowned_agent",
    title="Event from an agent that no workflow owns",
    default_severity=Severity.high,
    frameworks=("OWASP-ASI10", "NIST-AI-RMF:GOVERN"),
)


new_state = stateless
lookback = no_lookback


def detect(ctx: Context, state: None) -> list[Finding]:
    if ctx.workflow is not None:
        return []
    ev = ctx.event
    evidence = {"agent": ev.agent.id, "kind": ev.kind.value}
    if ev.workflow:
        evidence["claimed_workflow"] = ev.workflow  # the agent's own claim; only the matrix assigns owners
    if ev.principal:
        evidence["principal"] = ev.principal
    finding = build_finding(ctx, info, ev.agent.id, evidence)
    return [finding] if finding else []
