"""tool_burst: more tool calls per agent than the workflow's limit within its window (ASI08, LLM10)."""

from __future__ import annotations

from datetime import timedelta

from streams.detectors.base import Context, RuleInfo, build_finding
from streams.detectors.windows import WindowCounter
from warden.contract.events import Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Severity, Workflow

info = RuleInfo(
    id="tool_burst",
    title="Agent exceeded its tool-call rate limit",
    default_severity=Severity.medium,
    frameworks=("OWASP-ASI08", "OWASP-LLM10", "NIST-AI-RMF:MANAGE"),
)


new_state = WindowCounter


def lookback(workflow: Workflow) -> timedelta:
    """The tool-call window: how far back the counter needs the workflow's events."""
    limit = workflow.scope.limits.tool_calls
    return limit.window if limit is not None else timedelta(0)


def detect(ctx: Context, state: WindowCounter) -> list[Finding]:
    ev = ctx.event
    if ev.kind is not Kind.tool_call or ev.tool is None or ctx.workflow is None:
        return []
    limit = ctx.workflow.scope.limits.tool_calls
    if limit is None or not state.hit(ev.agent.id, ev.ts, limit, ev.event_id):
        return []
    evidence = {"tool": ev.tool.name, "limit": f"more than {limit.max} tool calls within {limit.window}"}
    finding = build_finding(ctx, info, ev.agent.id, evidence)
    return [finding] if finding else []
