"""secret_access: a secret read outside the workflow's grant (OWASP ASI03, LLM02), whether it comes as a
`secret_access` event or as a plain tool call to a tool the catalogue files under `secret_store`."""

from __future__ import annotations

from streams.detectors.base import Context, RuleInfo, build_finding, no_lookback, stateless
from warden.contract.events import ActivityEvent, Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Category, Severity

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
lookback = no_lookback


def secret_named(ctx: Context) -> str | None:
    """The secret an event reads: its resource, or the catalogue's resource argument of a `secret_store` tool call
    ("" when such a call names none: that fails closed, as no grant matches it)."""
    ev = ctx.event
    if ev.resource is not None:
        return ev.resource.id if is_secret(ev) else None
    entry = ctx.tool
    if ev.kind is Kind.tool_call and entry is not None and Category.secret_store in entry.categories:
        value = entry.argument(ev.tool.arguments if ev.tool else None)
        return value if isinstance(value, str) else ""
    return None


def detect(ctx: Context, state: None) -> list[Finding]:
    if ctx.scope is None:
        return []
    secret = secret_named(ctx)
    if secret is None:
        return []
    granted = ctx.scope.secrets
    if secret and granted.matches(secret):
        return []
    ev = ctx.event
    evidence = {"secret": secret or "(the call names no secret)", "granted_secrets": str(granted)}
    if ev.tool is not None and ev.resource is None:
        evidence["tool"] = ev.tool.name
    if ev.credential is not None and ev.credential.id:
        evidence["credential_id"] = ev.credential.id
    finding = build_finding(ctx, info, secret or (ev.tool.name if ev.tool else ev.kind.value), evidence)
    return [finding] if finding else []
