"""unapproved_tool: a tool call outside the workflow's approved tools (OWASP ASI02, LLM06)."""

from __future__ import annotations

from streams.detectors.base import Context, RuleInfo, build_finding, no_lookback, stateless
from warden.contract.events import Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Severity
from warden.contract.redact import redact_value

info = RuleInfo(
    id="unapproved_tool",
    title="Agent called a tool its workflow is not approved for",
    default_severity=Severity.medium,
    frameworks=("OWASP-ASI02", "OWASP-LLM06", "NIST-AI-RMF:MANAGE"),
)


new_state = stateless
lookback = no_lookback


def detect(ctx: Context, state: None) -> list[Finding]:
    ev = ctx.event
    if ev.kind is not Kind.tool_call or ev.tool is None or ctx.scope is None:
        return []
    allowed = ctx.scope.tools
    if allowed.matches(ev.tool.name):
        return []
    evidence = {"tool": ev.tool.name, "allowed_tools": str(allowed)}
    if ev.tool.arguments:
        evidence["arguments"] = redact_value(ev.tool.arguments)
    finding = build_finding(ctx, info, ev.tool.name, evidence)
    return [finding] if finding else []
