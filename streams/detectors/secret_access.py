"""secret_access: a secret read outside the workflow's grant (OWASP ASI03, LLM02)."""

from __future__ import annotations

from streams.detectors.base import Context, RuleInfo, build_finding, stateless
from warden.contract.events import ActivityEvent, Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Severity

info = RuleInfo(
    id="secret_access",
    title="Agent accessed a secret outside its workflow's grant",
    default_severity=Severity.high,
    frameworks=("OWASP-ASI03", "OWASP-LLM02", "NIST-AI-RMF:MANAGE"),
)


def is_secret(ev: ActivityEvent) -> bool:
    """A `secret_access` event, or any event whose resource is typed `secret`."""
    return ev.resource is not None and (ev.kind is Kind.secret_access or ev.resource.type == "secret")


new_state = stateless


def detect(ctx: Context, state: None) -> list[Finding]:
    ev = ctx.event
    if ctx.scope is None or ev.resource is None or not is_secret(ev):
        return []
    granted = ctx.scope.secrets
    if granted.matches(ev.resource.id):
        return []
    evidence = {"secret": ev.resource.id, "granted_secrets": str(granted)}
    if ev.credential is not None and ev.credential.id:
        evidence["credential_id"] = ev.credential.id
    finding = build_finding(ctx, info, ev.resource.id, evidence)
    return [finding] if finding else []
