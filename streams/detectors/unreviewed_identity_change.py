"""unreviewed_identity_change: an identity change without a prior approval from the *named* role (ASI03, ASI09).

An approval event (same agent, so same partition) names what it decides on in `approval.ref`: the change's
event id or its identity target. It counts only when it comes from the owner that the workflow names in
`scope.identity_changes.approval_from`, says `approved`, is dated within the window before the change (not
after it), and has not already been used by another change. A later decision by the same approver replaces an
earlier one, so a rejection withdraws an approval; the same approval event seen again changes nothing (so a
redelivered approval cannot re-arm one that a change has used). A decision Warden took on a gateway's approval
request (docs/approvals.md) names the request in its `approval_request` attribute; a change that goes ahead after
that request was denied carries it as `decided_in`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from streams.detectors.base import Context, RuleInfo, build_finding
from warden.contract.events import ActivityEvent, Decision, IdentityChange, Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Category, Severity, Workflow

info = RuleInfo(
    id="unreviewed_identity_change",
    title="Identity change without an approval from the named approver",
    default_severity=Severity.critical,
    frameworks=("OWASP-ASI03", "OWASP-ASI09", "NIST-AI-RMF:GOVERN"),
)
MAX_AGENTS = 100_000
MAX_REFS_PER_AGENT = 1024


@dataclass
class _Decision:
    approved: bool
    ts: datetime
    event_id: str  # the approval event that made it: its redelivery must not clear `used_by`
    used_by: str | None = None
    request: str | None = None  # the gateway's approval request Warden decided it on (issue 17), as evidence


@dataclass
class State:
    """Per agent: ref -> {approver -> latest decision}, LRU-capped in agents and in refs per agent."""

    max_agents: int = MAX_AGENTS
    max_refs: int = MAX_REFS_PER_AGENT
    _by_agent: OrderedDict[str, OrderedDict[str, dict[str, _Decision]]] = field(default_factory=OrderedDict)

    def record(self, ev: ActivityEvent) -> None:
        assert ev.approval is not None
        refs = self._by_agent.get(ev.agent.id)
        if refs is None:
            refs = self._by_agent[ev.agent.id] = OrderedDict()
            if len(self._by_agent) > self.max_agents:
                self._by_agent.popitem(last=False)
        else:
            self._by_agent.move_to_end(ev.agent.id)
        ref = ev.approval.ref or ev.event_id
        decisions = refs.setdefault(ref, {})
        refs.move_to_end(ref)
        if len(refs) > self.max_refs:
            refs.popitem(last=False)
        previous = decisions.get(ev.approval.approver)
        if previous is not None and previous.event_id == ev.event_id:
            return  # the same approval again (a producer retry, a replay): already recorded, maybe already used
        if previous is None or previous.ts <= ev.ts:
            request = ev.attributes.get("approval_request")
            decisions[ev.approval.approver] = _Decision(ev.approval.decision is Decision.approved, ev.ts, ev.event_id,
                                                        request=str(request) if request else None)

    def decisions(self, agent_id: str, refs: tuple[str, ...]) -> dict[str, _Decision]:
        """Every recorded decision on any of `refs`, by approver (the first ref wins a tie)."""
        by_ref: Mapping[str, dict[str, _Decision]] = self._by_agent.get(agent_id, {})
        out: dict[str, _Decision] = {}
        for ref in reversed(refs):
            out.update(by_ref.get(ref, {}))
        return out


def detect(ctx: Context, state: State) -> list[Finding]:
    ev = ctx.event
    if ev.kind is Kind.approval and ev.approval is not None:
        state.record(ev)
        return []
    wf = ctx.workflow
    change = identity_change_of(ctx)
    if change is None or wf is None or ctx.scope is None:
        return []
    if not ctx.scope.identity_ops.matches(change.operation):
        return []
    reason = _missing_approval(ev, change, wf, state)
    if reason is None:
        return []
    gate = wf.scope.identity_changes
    evidence = {
        "operation": change.operation,
        "target": change.target,
        "reason": reason,
        "required_from": f"{gate.approval_from} ({getattr(wf, gate.approval_from) or 'none named'})",
        "window": str(gate.window),
    }
    if change.entitlement:
        evidence["entitlement"] = change.entitlement
    named = getattr(wf, gate.approval_from)
    rejected = state.decisions(ev.agent.id, (ev.event_id, change.target)).get(named) if named else None
    if rejected is not None and not rejected.approved and rejected.request:
        evidence["decided_in"] = rejected.request  # the denied approval request this change went ahead after
    if ev.kind is Kind.tool_call and ev.tool is not None:
        evidence["tool"] = ev.tool.name  # a catalogued identity_admin tool call, not an identity_change event
    finding = build_finding(ctx, info, change.target, evidence)
    return [finding] if finding else []


def identity_change_of(ctx: Context) -> IdentityChange | None:
    """The change an event makes: its `identity_change`, or, for a tool call to a tool the catalogue files under
    `identity_admin`, the catalogue's operation (default: the tool name) on the target its resource argument names."""
    ev = ctx.event
    if ev.kind is Kind.identity_change:
        return ev.identity_change
    entry = ctx.tool
    if ev.kind is not Kind.tool_call or ev.tool is None or entry is None:
        return None
    if Category.identity_admin not in entry.categories:
        return None
    target = entry.argument(ev.tool.arguments)
    return IdentityChange(operation=entry.spec.operation or ev.tool.name,
                          target=str(target) if target not in (None, "") else ev.tool.name)


def _missing_approval(ev: ActivityEvent, change: IdentityChange, wf: Workflow, state: State) -> str | None:
    """None when a valid approval covers this change (and it is consumed); otherwise why not."""
    gate = wf.scope.identity_changes
    named = getattr(wf, gate.approval_from)
    if not named:
        return f"the workflow names no {gate.approval_from}"
    decisions = state.decisions(ev.agent.id, (ev.event_id, change.target))
    mine = decisions.get(named)
    if mine is None:
        others = sorted(a for a, d in decisions.items() if d.approved)
        if others:
            return f"approved by {', '.join(others)}, not by the named {gate.approval_from} {named!r}"
        return f"no approval from the named {gate.approval_from} {named!r}"
    if not mine.approved:
        return f"rejected by {named!r}"
    if mine.ts > ev.ts:
        return f"the approval from {named!r} is dated after the change"
    if ev.ts - mine.ts > gate.window:
        return f"the approval from {named!r} is older than the {gate.window} window"
    if mine.used_by not in (None, ev.event_id):
        return f"the approval from {named!r} was already used by change {mine.used_by!r}"
    mine.used_by = ev.event_id
    return None


new_state = State


def lookback(workflow: Workflow) -> timedelta:
    """The identity-approval window: an approval older than it covers no change."""
    return workflow.scope.identity_changes.window
