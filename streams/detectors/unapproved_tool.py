"""unapproved_tool: a tool call outside the workflow's approved tools (OWASP ASI02, LLM06)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from streams.detectors.base import Context, RuleInfo, build_finding
from warden.events import Kind
from warden.findings import Finding
from warden.matrix import Severity
from warden.redact import redact_value

info = RuleInfo(
    id="unapproved_tool",
    title="Agent called a tool its workflow is not approved for",
    default_severity=Severity.medium,
    frameworks=("OWASP-ASI02", "OWASP-LLM06", "NIST-AI-RMF:MANAGE"),
)


def tool_allowed(name: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def detect(ctx: Context, state: object = None) -> list[Finding]:
    ev = ctx.event
    if ev.kind is not Kind.tool_call or ev.tool is None or ctx.workflow is None:
        return []
    if tool_allowed(ev.tool.name, ctx.workflow.scope.tools):
        return []
    evidence = {"tool": ev.tool.name, "allowed_tools": ", ".join(ctx.workflow.scope.tools) or "(none)"}
    if ev.tool.arguments:
        evidence["arguments"] = redact_value(ev.tool.arguments)
    finding = build_finding(ctx, info, ev.tool.name, evidence)
    return [finding] if finding else []
