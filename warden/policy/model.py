"""The compiled policy: a validated matrix plus the indexes that keep detection cost independent of its size."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from warden.contract.containment import Plan, Playbook
from warden.contract.findings import EscalationRef, FindingOwners, OwnerRef
from warden.contract.matrix import Category, Matrix, Owner, Severity, Workflow
from warden.policy.cel import CompiledRules
from warden.policy.containment import ActionCheck, plans, playbooks_of
from warden.policy.globs import CompiledScope
from warden.policy.scope_checks import ScopeChecks
from warden.policy.tiers import Tiers, resolve
from warden.policy.tools import ToolCatalogue


@dataclass(frozen=True)
class PolicyIssue:
    """One located problem: the file, the line in it (when known), the dotted matrix path and why."""

    file: str
    path: str
    reason: str
    level: str = "error"
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"

    def as_dict(self) -> dict[str, str | int | None]:
        return {"level": self.level, "file": self.file, "line": self.line, "path": self.path, "reason": self.reason}


class PolicyError(Exception):
    """The policy cannot be used; `issues` says where and why."""

    def __init__(self, issues: list[PolicyIssue], warnings: list[PolicyIssue] | None = None):
        self.issues = issues
        self.warnings = warnings or []
        super().__init__("; ".join(str(i) for i in issues))


@dataclass(frozen=True)
class Catalogue:
    """What a matrix may name, from the layers that own it (policy imports none of them): rule ids, the shipped
    playbooks, the containment actions (each checks its own parameters) and who may act per notifier."""

    rules: frozenset[str]
    playbooks: Mapping[str, Playbook] = field(default_factory=dict)
    actions: Mapping[str, ActionCheck] = field(default_factory=dict)
    actors: Mapping[str, Callable[[str], bool]] = field(default_factory=dict)
    """Per notifier: which identities may act (click a button), so the lint can check team members."""


@dataclass(frozen=True)
class Assignment:
    """An agent's workflow and its compiled scope: what one lookup by agent id yields on the hot path."""

    workflow_id: str
    workflow: Workflow
    scope: CompiledScope
    checks: ScopeChecks = field(default_factory=ScopeChecks)  # argument constraints and flow rules


@dataclass
class Policy:
    """A checked matrix, its compiled CEL rules and its indexes. Built only by `build_policy`/`load_policy`."""

    matrix: Matrix
    sha256: str
    files: tuple[str, ...]
    rules: CompiledRules = field(repr=False)
    warnings: list[PolicyIssue] = field(default_factory=list)
    shipped_playbooks: Mapping[str, Playbook] = field(default_factory=dict, repr=False)
    scope_checks: dict[str, ScopeChecks] = field(default_factory=dict, repr=False)
    tools: ToolCatalogue = field(init=False, repr=False)
    assignments: dict[str, Assignment] = field(init=False, default_factory=dict, repr=False)
    _owners_cache: dict[str | None, FindingOwners] = field(default_factory=dict, repr=False)
    playbooks: dict[str, Playbook] = field(init=False, default_factory=dict, repr=False)
    _plans_cache: dict[tuple[str, Severity, str | None], list[Plan]] = field(default_factory=dict, repr=False)
    _tiers_cache: dict[tuple[str, frozenset[Category], str | None], Tiers] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        """Index once: agent -> workflow, its compiled scope globs and checks; the tool catalogue; the playbooks."""
        self.playbooks = playbooks_of(self.matrix, self.shipped_playbooks)
        self.tools = ToolCatalogue(self.matrix.tools)
        for wf_id, wf in self.matrix.workflows.items():
            checks = self.scope_checks.get(wf_id) or ScopeChecks()
            assignment = Assignment(wf_id, wf, CompiledScope.of(wf.scope), checks)
            for agent in wf.agents:
                self.assignments[agent] = assignment  # the lint rejects an agent claimed twice

    def workflow_id_for(self, agent_id: str) -> str | None:
        assignment = self.assignments.get(agent_id)
        return assignment.workflow_id if assignment else None

    def workflow(self, workflow_id: str | None) -> Workflow | None:
        return self.matrix.workflows.get(workflow_id) if workflow_id else None

    def owner(self, owner_id: str | None) -> Owner | None:
        return self.matrix.owners.get(owner_id) if owner_id else None

    def owners_for(self, workflow_id: str | None) -> FindingOwners:
        """A workflow's named roles as owner references, frozen into findings so later edits never re-route
        an open incident. An unknown workflow routes every role to the default security owner."""
        cached = self._owners_cache.get(workflow_id)
        if cached is not None:
            return cached
        wf = self.workflow(workflow_id)
        d = self.matrix.defaults
        if wf is None:
            ref = self.owner_ref(d.security_owner)
            resolved = FindingOwners(
                approver=ref, detector=ref, responder=ref,
                escalation=[EscalationRef(owner=self.owner_ref(s.owner), ack_timeout=s.ack_timeout,
                                          approves=s.approves) for s in d.escalation],
            )
        else:
            resolved = FindingOwners(
                approver=self._maybe_ref(wf.approver),
                detector=self._maybe_ref(wf.detector),
                responder=self.owner_ref(wf.responder or d.security_owner),
                business_owner=self._maybe_ref(wf.business_owner),
                data_owner=self._maybe_ref(wf.data_owner),
                escalation=[EscalationRef(owner=self.owner_ref(s.owner), ack_timeout=s.ack_timeout,
                                          approves=s.approves) for s in (wf.escalation or d.escalation)],
            )
        self._owners_cache[workflow_id] = resolved
        return resolved

    def rule_owners(self, owner_id: str | None) -> FindingOwners:
        """Who hears that a custom rule cannot be evaluated: its `owner` (default: the security owner) as detector
        and responder, with the default escalation chain."""
        ref = self.owner_ref(owner_id or self.matrix.defaults.security_owner)
        return FindingOwners(detector=ref, responder=ref, escalation=[
            EscalationRef(owner=self.owner_ref(s.owner), ack_timeout=s.ack_timeout, approves=s.approves)
            for s in self.matrix.defaults.escalation])

    def plans_for(self, rule: str, severity: Severity, workflow_id: str | None) -> list[Plan]:
        """The playbooks a finding triggers, frozen into it like its owners (cached: bindings are few, findings
        many)."""
        key = (rule, severity, workflow_id)
        cached = self._plans_cache.get(key)
        if cached is None:
            cached = plans(self.matrix, self.playbooks, rule, severity, self.workflow(workflow_id))
            self._plans_cache[key] = cached
        return cached

    def tiers_for(self, rule: str, categories: frozenset[Category], workflow_id: str | None) -> Tiers:
        """How a finding of `rule` on a call of these tool categories reaches people (warden/policy/tiers.py);
        cached like the plans."""
        key = (rule, categories, workflow_id)
        cached = self._tiers_cache.get(key)
        if cached is None:
            cached = resolve(rule, categories, self.workflow(workflow_id), self.matrix.rules.tiers)
            if len(self._tiers_cache) < 10_000:
                self._tiers_cache[key] = cached
        return cached

    def owner_ref(self, owner_id: str) -> OwnerRef:
        """An owner as a finding carries it: id, name and contacts per notifier."""
        owner = self.owner(owner_id)
        if owner is None:
            return OwnerRef(id=owner_id)
        return OwnerRef.of(owner_id, owner)

    def _maybe_ref(self, owner_id: str | None) -> OwnerRef | None:
        return None if owner_id is None else self.owner_ref(owner_id)
