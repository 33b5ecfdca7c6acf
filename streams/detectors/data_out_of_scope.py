"""data_out_of_scope: data or retrieval outside the data owner's scope, or above the workflow's classification."""

from __future__ import annotations

from streams.detectors.base import Context, RuleInfo, build_finding, no_lookback, stateless
from streams.detectors.secret_access import is_secret
from warden.contract.findings import Finding
from warden.contract.matrix import CLASSIFICATIONS, Severity

info = RuleInfo(
    id="data_out_of_scope",
    title="Agent touched data outside its data owner's scope",
    default_severity=Severity.high,
    frameworks=("OWASP-ASI03", "OWASP-LLM02", "NIST-AI-RMF:MANAGE"),
)
_RANK = {c: i for i, c in enumerate(CLASSIFICATIONS)}


new_state = stateless
lookback = no_lookback


def detect(ctx: Context, state: None) -> list[Finding]:
    """Any non-secret resource (a `data_access`, or a retrieval tool call naming one) is checked twice:
    its id against the data globs, and its classification against `max_classification`. An unknown
    classification ranks above every known one, so a typo fails closed."""
    ev = ctx.event
    wf = ctx.workflow
    if wf is None or ctx.scope is None or ev.resource is None or is_secret(ev):
        return []
    res = ev.resource
    allowed = ctx.scope.data
    reasons = []
    if not allowed.matches(res.id):
        reasons.append("resource is outside the data owner's scope")
    if res.classification is not None:
        rank = _RANK.get(res.classification.lower(), len(CLASSIFICATIONS))
        if rank > _RANK[wf.scope.max_classification]:
            reasons.append(f"classification {res.classification!r} is above the workflow's "
                           f"{wf.scope.max_classification!r}")
    if not reasons:
        return []
    evidence = {
        "resource": res.id,
        "resource_type": res.type,
        "reason": "; ".join(reasons),
        "allowed_data": str(allowed),
        "max_classification": wf.scope.max_classification,
    }
    if res.classification is not None:
        evidence["classification"] = res.classification
    finding = build_finding(ctx, info, res.id, evidence)
    return [finding] if finding else []
