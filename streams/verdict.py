"""The verdict on a gateway's approval request: the event-path detectors judge the action before it happens.

The request becomes the activity event it would be, and the stateless scope detectors (unowned_agent,
unapproved_tool, argument_out_of_scope, secret_access, data_out_of_scope, quarantine_breach) run on it exactly as
on a real event: any enforced finding is a `deny` naming its rule with its redacted evidence. Then, when the
worker knows the session (it owns the agent's activity partition), the `provenance` rule judges the call against
what the session read: a finding whose approval tier is page is a `deny`, hold is `approval_required` from the
approver, review and log let the gates decide. Otherwise the matrix's
gates decide `approval_required` (an identity operation in `scope.identity_changes.require_approval`, a
tool of a category in `scope.approvals.categories`, or a custom rule with `gate: approval` that matches), else
`allow`. Pure: no I/O, so both transports give the same verdict for the same request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from streams.detectors import REGISTRY, custom, provenance
from streams.detectors.base import Context, stateless
from streams.detectors.provenance_state import Session
from streams.detectors.unreviewed_identity_change import identity_change_of
from warden.contract.approval_requests import ApprovalRequest, Judgement, Verdict
from warden.contract.containment import QuarantineMark
from warden.contract.events import ActivityEvent, Kind, Tool
from warden.contract.findings import FindingOwners
from warden.contract.matrix import Tier
from warden.contract.redact import redact_text
from warden.policy import Policy

# The detectors that judge one event alone: the scope rules. Stateful ones (windows, flows) need the history.
SCOPE_RULES = tuple(rule for rule, d in REGISTRY.items() if d.new_state is stateless)
GATE_RULE = "unreviewed_identity_change"  # the rule an identity-change approval satisfies


@dataclass(frozen=True)
class Known:
    """What the answering worker knows of a session's reads: `held` is false when another worker owns the agent's
    activity partition (so its reads were never seen here); `session` is None when nothing was read."""

    held: bool
    session: Session | None


History = Callable[[str, str | None], Known]
CATEGORY_GATE = "approval_gate"  # the rule id named when a tool category is gated


def as_event(request: ApprovalRequest, request_id: str, now: datetime) -> ActivityEvent:
    """The activity event the action would be, dated now, with the request id as its event id."""
    kind = Kind.tool_call if request.tool is not None else Kind.identity_change
    tool = None if request.tool is None else Tool(name=request.tool.name, arguments=request.tool.arguments)
    return ActivityEvent(event_id=request_id, ts=now, kind=kind, agent=request.agent, session_id=request.session_id,
                         principal=request.principal, tool=tool, identity_change=request.identity_change)


def judge(request: ApprovalRequest, request_id: str, policy: Policy, now: datetime,
          quarantined: Mapping[str, QuarantineMark] | None = None, *, history: History | None = None) -> Judgement:
    """allow, deny (the first enforced scope finding) or approval_required (the first gate that applies), with
    the chain it climbs when nobody answers.

    An identity change counts as reviewed only when the owner the workflow names approved it (that is what
    `unreviewed_identity_change` accepts), so its escalation steps are told the approver has not answered, and
    cannot decide. For the other gates, the escalation steps marked `approves` may decide once reached."""
    j = _judge(request, request_id, policy, now, quarantined, history=history)
    if j.verdict is not Verdict.approval_required or j.approver is None or j.owners is None:
        return j
    if j.rule == GATE_RULE:
        steps = [(step.owner, False) for step in j.owners.escalation]
    else:
        steps = [(step.owner, True) for step in j.owners.escalation if step.approves]
    chain = [(policy.owner_ref(j.approver), True), *steps]
    return replace(j, chain=tuple(o for o, _ in chain), decides=tuple(d for _, d in chain))


def _judge(request: ApprovalRequest, request_id: str, policy: Policy, now: datetime,
           quarantined: Mapping[str, QuarantineMark] | None = None, *,
           history: History | None = None) -> Judgement:
    ev = as_event(request, request_id, now)
    ctx = Context.of(ev, policy, quarantined or {})
    overrides = policy.matrix.rules.builtin
    for rule_id in SCOPE_RULES:
        cfg = overrides.get(rule_id)
        if cfg is not None and not cfg.enabled:
            continue
        for finding in REGISTRY[rule_id].detect(ctx, None):
            if not finding.shadow:
                return Judgement(Verdict.deny, ctx.workflow_id, finding.rule, finding.title, dict(finding.evidence),
                                 finding.owners, target=finding.target)
    wf = ctx.workflow
    if wf is None or ctx.scope is None:  # unowned_agent is disabled: still never an allow
        return Judgement(Verdict.deny, None, "unowned_agent", "no workflow lists this agent",
                         {"agent": redact_text(ev.agent.id, 200)}, policy.owners_for(None), target=ev.agent.id)
    owners = policy.owners_for(ctx.workflow_id)
    timeout = wf.scope.approvals.timeout
    known = history(ev.agent.id, ev.session_id) if history is not None else Known(True, None)
    if not known.held and ev.tool is not None and provenance.traced(ctx):  # fail closed: not seen is not clean
        return _gate(provenance.info.id, "the session's reads are held by the worker that owns the agent's "
                     "partition, not this one: provenance cannot be judged here", {"tool": ev.tool.name},
                     role="approver", named=wf.approver, workflow_id=ctx.workflow_id, owners=owners,
                     timeout=timeout, target=ev.tool.name)
    for finding in provenance.judge_call(ctx, known.session):
        if finding.shadow or finding.approval_tier in (Tier.review, Tier.log):
            continue
        if finding.approval_tier is Tier.page:
            return Judgement(Verdict.deny, ctx.workflow_id, finding.rule, finding.title, dict(finding.evidence),
                             finding.owners, target=finding.target)
        return _gate(finding.rule, finding.title, dict(finding.evidence), role="approver", named=wf.approver,
                     workflow_id=ctx.workflow_id, owners=owners, timeout=timeout, target=finding.target)
    change = identity_change_of(ctx)
    if change is not None and ctx.scope.identity_ops.matches(change.operation):
        role = wf.scope.identity_changes.approval_from
        evidence = {"operation": change.operation, "target": change.target}
        return _gate(GATE_RULE, f"identity operation {change.operation!r} needs the {role}'s approval",
                     evidence, role=role, named=getattr(wf, role), workflow_id=ctx.workflow_id, owners=owners,
                     timeout=timeout, target=change.target)
    entry = ctx.tool
    gated = set(wf.scope.approvals.categories)
    if ev.tool is not None and entry is not None and gated & entry.categories:
        cats = ", ".join(sorted(c.value for c in gated & entry.categories))
        target = entry.argument(ev.tool.arguments)
        evidence = {"tool": ev.tool.name, "categories": cats}
        return _gate(CATEGORY_GATE, f"tools of category {cats} need the approver's approval", evidence,
                     role="approver", named=wf.approver, workflow_id=ctx.workflow_id, owners=owners,
                     timeout=timeout, target=str(target) if target not in (None, "") else ev.tool.name)
    for finding in custom.detect(ctx):
        failed = finding.rule == custom.RULE_ERROR.id  # a gate rule that cannot be evaluated holds: fail closed
        rule_id = finding.evidence.get("rule", "") if failed else finding.rule
        custom_rule = next((r for r in policy.matrix.rules.custom if r.id == rule_id), None)
        if custom_rule is not None and custom_rule.gate == "approval" and not finding.shadow:
            why = "could not be evaluated, so it holds" if failed else "gates"
            return _gate(custom_rule.id, f"custom rule {custom_rule.id!r} {why} this action", dict(finding.evidence),
                         role="approver", named=wf.approver, workflow_id=ctx.workflow_id, owners=owners,
                         timeout=timeout, target=finding.target)
    return Judgement(Verdict.allow, ctx.workflow_id, reason="in scope; no approval gate applies", owners=owners)


def _gate(rule: str, reason: str, evidence: dict[str, str], *, role: str, named: str | None,
          workflow_id: str | None, owners: FindingOwners, timeout: timedelta, target: str) -> Judgement:
    clean = {k: redact_text(v) for k, v in evidence.items()}
    if not named:  # nobody can approve: never a silent allow
        return Judgement(Verdict.deny, workflow_id, rule, f"{reason}, and the workflow names no {role}", clean,
                         owners, target=redact_text(target, 200))
    return Judgement(Verdict.approval_required, workflow_id, rule, reason, clean, owners, role, named, timeout,
                     redact_text(target, 200))
