"""untrusted_flow and the workflows' own flow rules: a sensitive call soon after untrusted input (ASI01, LLM01).

After a call in category A (for the built-in: `untrusted_input`, such as reading mail or a web page), a call in
category B (payment, external_comm, identity_admin, destructive, code_exec) in the same session, within N tool
calls or T seconds of event time, is a finding, unless B's arguments meet the rule's `unless` schema for that
tool (paying a known payee after reading a bill is fine). Invariant's `->` over a trace is the model. The trail
is `sessions.SessionTrail`: per (agent, session), partition-local, bounded, rebuilt from the log.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from streams.detectors.base import Context, RuleInfo, build_finding
from streams.detectors.sessions import Seen, SessionTrail
from warden.contract.events import Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Category, RuleMode, Severity, Workflow
from warden.contract.redact import redact_value
from warden.policy.scope_checks import (
    SESSION_TTL,
    TIER_SEVERITY,
    UNTRUSTED_FLOW,
    UNTRUSTED_FLOW_FRAMEWORKS,
    CompiledFlow,
)

info = RuleInfo(
    id=UNTRUSTED_FLOW,
    title="Sensitive tool call soon after the session read untrusted input",
    default_severity=Severity.high,
    frameworks=UNTRUSTED_FLOW_FRAMEWORKS,
)


new_state = SessionTrail


def lookback(workflow: Workflow) -> timedelta:
    """The longest of the built-in and the workflow's own flows (one bounded only in steps: the session TTL)."""
    flows = [workflow.scope.untrusted_flow.within, *(f.within for f in workflow.scope.flows)]
    return max(w if w is not None else SESSION_TTL for w in flows)
_NONE: frozenset[Category] = frozenset()  # a tool the catalogue does not know still counts as a step


def detect(ctx: Context, trail: SessionTrail) -> list[Finding]:
    """Runs even when the built-in is disabled (the workflows' own flow rules share the trail); then only the
    built-in is skipped."""
    ev = ctx.event
    entry, checks = ctx.tool, ctx.checks
    if ev.kind is not Kind.tool_call or ev.tool is None or checks is None:
        return []
    categories = entry.categories & checks.categories_seen if entry is not None else _NONE
    key = (ev.agent.id, ev.session_id or f"agent:{ev.agent.id}")
    if not categories & checks.after and (not len(trail) or trail.get(key) is None):
        return []  # nothing to remember yet: a session enters the trail at its first `after` call
    stepped = trail.step(key, ev.ts, ev.event_id)
    if stepped is None:
        return []
    session, step = stepped
    findings: list[Finding] = []
    cfg = ctx.policy.matrix.rules.builtin.get(UNTRUSTED_FLOW)
    for flow in checks.flows:
        if not categories & flow.then or (flow.builtin and cfg is not None and not cfg.enabled):
            continue
        prior = _latest(session.last, flow, step, ev.ts)
        if prior is None or (flow.unless.get(ev.tool.name) is not None
                             and flow.unless[ev.tool.name].ok(ev.tool.arguments)):
            continue
        finding = _finding(ctx, flow, prior, step)
        if finding is not None:
            findings.append(finding)
    for category in categories:
        session.last[category] = Seen(ev.ts, step, ev.event_id, ev.tool.name)
    return findings


def _latest(last: dict[Category, Seen], flow: CompiledFlow, step: int, ts: datetime) -> Seen | None:
    """The most recent `after` call still within the flow's steps and time, or None."""
    best: Seen | None = None
    for category in flow.after:
        seen = last.get(category)
        if seen is None or (best is not None and seen.step <= best.step):
            continue
        best = seen
    if best is None:
        return None
    if flow.within_steps is not None and step - best.step > flow.within_steps:
        return None
    if flow.within is not None and not (best.ts <= ts <= best.ts + flow.within):
        return None
    return best


def _finding(ctx: Context, flow: CompiledFlow, prior: Seen, step: int) -> Finding | None:
    ev, entry, wf = ctx.event, ctx.tool, ctx.workflow
    assert ev.tool is not None and entry is not None and wf is not None
    cfg = ctx.policy.matrix.rules.builtin.get(flow.id) if flow.builtin else None
    severity = (cfg.severity if cfg is not None else None) or flow.severity or TIER_SEVERITY[wf.risk]
    title = f"Flow rule {flow.id}: {'|'.join(sorted(flow.then))} after {'|'.join(sorted(flow.after))}"
    rule = info if flow.builtin else RuleInfo(flow.id, title, severity, flow.frameworks)
    evidence = {
        "tool": ev.tool.name,
        "categories": ", ".join(sorted(entry.categories & flow.then)),
        "after_tool": prior.tool,
        "after_event": prior.event_id,
        "after_categories": ", ".join(sorted(flow.after)),
        "steps_since": str(step - prior.step),
        "seconds_since": f"{(ev.ts - prior.ts).total_seconds():g}",
    }
    target = entry.argument(ev.tool.arguments)
    if target is not None:
        evidence["target"] = redact_value(target, 200)
    if flow.unless:
        evidence["allowed_by"] = "unless: " + ", ".join(sorted(flow.unless))
    mode = None if flow.builtin else (flow.mode or RuleMode.enforce)
    return build_finding(ctx, rule, ev.tool.name, evidence, severity=severity, mode=mode, rule_id=flow.id,
                         raise_agentic=False)
