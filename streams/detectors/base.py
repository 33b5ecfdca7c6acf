"""The detector interface and the one place a finding is built (owners frozen, severity adjusted, redacted)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from warden.contract.containment import CredentialRef, QuarantineMark
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding, FindingOwners, finding_id
from warden.contract.matrix import BuiltinRule, Category, Mode, Risk, RuleMode, Severity, Tier, Workflow
from warden.contract.redact import redact_text
from warden.policy import Policy
from warden.policy.globs import CompiledScope
from warden.policy.scope_checks import ScopeChecks
from warden.policy.tools import CatalogEntry


@dataclass(frozen=True)
class RuleInfo:
    """What a built-in rule is and what it maps to in OWASP (ASI/LLM) and NIST AI RMF."""

    id: str
    title: str
    default_severity: Severity
    frameworks: tuple[str, ...]


@dataclass
class Context:
    """One event with its resolved workflow: what every detector needs, computed once."""

    event: ActivityEvent
    policy: Policy
    workflow_id: str | None
    workflow: Workflow | None
    scope: CompiledScope | None = None
    quarantined: Mapping[str, QuarantineMark] = field(default_factory=dict)
    checks: ScopeChecks | None = None
    tool: CatalogEntry | None = None  # the catalogue's entry for a tool call's tool

    @classmethod
    def of(cls, event: ActivityEvent, policy: Policy,
           quarantined: Mapping[str, QuarantineMark] | None = None) -> Context:
        a = policy.assignments.get(event.agent.id)  # one lookup, whatever the matrix size
        marks = quarantined if quarantined is not None else {}
        entry = policy.tools.entry(event.tool.name) if event.tool is not None else None
        if a is None:
            return cls(event=event, policy=policy, workflow_id=None, workflow=None, quarantined=marks, tool=entry)
        return cls(event=event, policy=policy, workflow_id=a.workflow_id, workflow=a.workflow, scope=a.scope,
                   quarantined=marks, checks=a.checks, tool=entry)


class Detector(Protocol):
    """A built-in detector: one module with `info`, `new_state()`, `lookback(workflow)` and a pure
    `detect(ctx, state)`.

    `state` is what `new_state()` made, kept per worker and keyed inside by agent or session; `lookback` says how
    far back in event time that state needs a workflow's events (rebuilding it reads the log that far). A
    stateless detector uses `new_state = stateless` and `lookback = no_lookback`. Adding one: write the module,
    add it to `DETECTORS`.
    """

    @property
    def info(self) -> RuleInfo: ...

    def new_state(self) -> Any: ...

    def lookback(self, workflow: Workflow) -> timedelta: ...

    def detect(self, ctx: Context, state: Any) -> list[Finding]: ...


def stateless() -> None:
    """The state factory of a detector that keeps none."""
    return None


def no_lookback(workflow: Workflow) -> timedelta:
    """The lookback of a detector that keeps no state: it needs no earlier event."""
    return timedelta(0)


_DEFAULT_RULE = BuiltinRule()
_NO_CATEGORIES: frozenset[Category] = frozenset()


def build_finding(
    ctx: Context,
    info: RuleInfo,
    target: str,
    evidence: dict[str, str],
    *,
    severity: Severity | None = None,
    mode: RuleMode | None = None,
    tags: tuple[str, ...] = (),
    title: str | None = None,
    rule_id: str | None = None,
    raise_agentic: bool = True,
    owners: FindingOwners | None = None,
) -> Finding | None:
    """Build a finding, or None when the matrix exempts it. Agentic workflows get one severity level more, unless
    the severity already follows the risk tier (`raise_agentic=False`). `owners` replaces the workflow's roles (a
    `rule_error` goes to the rule's owner)."""
    rule_id = rule_id or info.id
    cfg = ctx.policy.matrix.rules.builtin.get(rule_id, _DEFAULT_RULE)  # `enabled` is applied by detect()
    wf = ctx.workflow
    if cfg.exempt_chat_low_risk and wf is not None and wf.mode is Mode.chat and wf.risk is Risk.low:
        return None
    sev = severity or cfg.severity or info.default_severity
    if raise_agentic and wf is not None and wf.mode is Mode.agentic:
        sev = sev.raised()
    ev = ctx.event
    shadow = (mode or cfg.mode) is RuleMode.shadow
    tiers = ctx.policy.tiers_for(rule_id, ctx.tool.categories if ctx.tool is not None else _NO_CATEGORIES,
                                 ctx.workflow_id)
    # Containment follows a page only: a finding kept for review or the log is a signal too weak to act on alone.
    plans = [] if shadow or tiers.event is not Tier.page else ctx.policy.plans_for(rule_id, sev, ctx.workflow_id)
    cred = ev.credential
    return Finding(
        finding_id=finding_id(ev.event_id, rule_id),
        rule=rule_id,
        severity=sev,
        title=title or info.title,
        frameworks=list(info.frameworks),
        agent_id=ev.agent.id,
        workflow=ctx.workflow_id,
        mode=wf.mode if wf else None,
        event_id=ev.event_id,
        event_kind=ev.kind.value,
        session_id=ev.session_id,
        ts=ev.ts,
        target=redact_text(target, 200),
        evidence={k: redact_text(v) for k, v in evidence.items()},
        owners=owners or ctx.policy.owners_for(ctx.workflow_id),
        policy_sha256=ctx.policy.sha256,
        shadow=shadow,
        tags=list(tags),
        group_window_s=(wf.group_window.total_seconds() if wf else 3600.0),
        containment=plans,
        # The token is sealed by the runtime, which holds the key; a finding leaves detection without it.
        credential=None if cred is None or not plans else CredentialRef(
            id=redact_text(cred.id, 200) if cred.id else None, issuer=cred.issuer),
        tier=tiers.event,
        approval_tier=tiers.approval,
    )
