"""argument_out_of_scope: an approved tool called with arguments its workflow's constraints forbid (ASI02, LLM06).

A hijacked agent seldom needs a new tool: it pays an unknown account or mails an outside address with an approved
one. The workflow's `scope.arguments` holds a JSON Schema per tool (with named lists and domain checks), compiled
once per policy; a call that breaks it is one finding naming the tool, the argument path, the redacted value and
the constraint as written.
"""

from __future__ import annotations

from streams.detectors.base import Context, RuleInfo, build_finding, no_lookback, stateless
from warden.contract.events import Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Severity
from warden.contract.redact import redact_value

info = RuleInfo(
    id="argument_out_of_scope",
    title="Agent called an approved tool with arguments outside its scope",
    default_severity=Severity.high,
    frameworks=("OWASP-ASI02", "OWASP-LLM06", "NIST-AI-RMF:MANAGE"),
)
MAX_LISTED = 3  # violations spelled out in the evidence; the rest are counted


new_state = stateless
lookback = no_lookback


def detect(ctx: Context, state: None) -> list[Finding]:
    ev = ctx.event
    if ev.kind is not Kind.tool_call or ev.tool is None or ctx.checks is None:
        return []
    check = ctx.checks.arguments.get(ev.tool.name)
    if check is None or check.ok(ev.tool.arguments):
        return []
    violations = check.violations(ev.tool.arguments)
    first = violations[0]
    evidence = {
        "tool": ev.tool.name,
        "argument": first.path,
        "value": redact_value(first.value, 200),
        "constraint": first.constraint,
    }
    if len(violations) > 1:
        evidence["violations"] = "; ".join(f"{v.path}: {v.constraint}" for v in violations[:MAX_LISTED])
        if len(violations) > MAX_LISTED:
            evidence["violations"] += f"; … (+{len(violations) - MAX_LISTED} more)"
    finding = build_finding(ctx, info, f"{ev.tool.name}:{first.path}", evidence)
    return [finding] if finding else []
