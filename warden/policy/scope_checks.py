"""A workflow's argument constraints and session flow rules, compiled once per policy with located issues."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from warden.contract.matrix import (
    SENSITIVE_AFTER_UNTRUSTED,
    Category,
    Matrix,
    Risk,
    RuleMode,
    Severity,
    Workflow,
)
from warden.policy.arguments import ArgumentCheck, SchemaIssue, compile_constraint, merged_lists
from warden.policy.provenance import ProvenanceChecks, compile_provenance

UNTRUSTED_FLOW = "untrusted_flow"
# How long a session's flow state lives without activity (event time); a flow's `within` may not exceed it.
SESSION_TTL = timedelta(hours=2)
UNTRUSTED_FLOW_FRAMEWORKS = ("OWASP-ASI01", "OWASP-LLM01", "NIST-AI-RMF:MANAGE")
# A flow finding's severity follows the workflow's risk tier unless the rule sets one.
TIER_SEVERITY = {Risk.low: Severity.medium, Risk.high: Severity.high, Risk.critical: Severity.critical}


@dataclass(frozen=True)
class CompiledFlow:
    """One flow rule ready for the hot path: `after` then `then` within steps or time, `unless` compiled."""

    id: str
    after: frozenset[Category]
    then: frozenset[Category]
    within_steps: int | None
    within: timedelta | None
    unless: Mapping[str, ArgumentCheck]
    severity: Severity | None
    mode: RuleMode | None  # None: the built-in's `rules.builtin` mode applies
    frameworks: tuple[str, ...]
    builtin: bool = False


@dataclass(frozen=True)
class ScopeChecks:
    """One workflow's compiled argument constraints (by exact tool name) and flow rules (built-in first)."""

    arguments: Mapping[str, ArgumentCheck] = field(default_factory=dict)
    flows: tuple[CompiledFlow, ...] = ()
    categories_seen: frozenset[Category] = frozenset()  # every category some flow reads: others skip the trail
    after: frozenset[Category] = frozenset()  # every category that starts some flow: a session enters the trail
    provenance: ProvenanceChecks = field(default_factory=ProvenanceChecks)


def compile_scope_checks(matrix: Matrix) -> tuple[dict[str, ScopeChecks], list[SchemaIssue]]:
    """Every workflow's checks, and the issues found compiling them (located by matrix path)."""
    out: dict[str, ScopeChecks] = {}
    issues: list[SchemaIssue] = []
    for wf_id, wf in matrix.workflows.items():
        base = ("workflows", wf_id)
        lists = merged_lists(matrix.lists, wf.lists)
        arguments = _compile_all(wf.scope.arguments, lists, (*base, "scope", "arguments"), issues)
        flows = [_untrusted_flow(wf, lists, base, issues)]
        for i, rule in enumerate(wf.scope.flows):
            where = (*base, "scope", "flows", str(i))
            unless = _compile_all(rule.unless, lists, (*where, "unless"), issues)
            flows.append(CompiledFlow(
                rule.id, frozenset(rule.after), frozenset(rule.then), rule.within_steps, rule.within, unless,
                rule.severity, rule.mode, tuple(rule.frameworks) or UNTRUSTED_FLOW_FRAMEWORKS))
        seen = frozenset(c for f in flows for c in f.after | f.then)
        provenance = compile_provenance(wf.provenance, lists,
                                        [check.schema for check in arguments.values()])
        out[wf_id] = ScopeChecks(arguments, tuple(flows), seen, frozenset(c for f in flows for c in f.after),
                                 provenance)
    return out, list(dict.fromkeys(issues))  # a bad list entry is found once per use: report it once


def _untrusted_flow(wf: Workflow, lists: Mapping[str, list[str]], base: tuple[str, ...],
                    issues: list[SchemaIssue]) -> CompiledFlow:
    cfg = wf.scope.untrusted_flow
    unless = _compile_all(cfg.unless, lists, (*base, "scope", "untrusted_flow", "unless"), issues)
    return CompiledFlow(UNTRUSTED_FLOW, frozenset({Category.untrusted_input}), frozenset(SENSITIVE_AFTER_UNTRUSTED),
                        cfg.within_steps, cfg.within, unless, None, None, UNTRUSTED_FLOW_FRAMEWORKS, builtin=True)


def _compile_all(schemas: Mapping[str, Mapping[str, Any]], lists: Mapping[str, list[str]],
                 where: tuple[str, ...], issues: list[SchemaIssue]) -> dict[str, ArgumentCheck]:
    compiled: dict[str, ArgumentCheck] = {}
    for tool, schema in schemas.items():
        check, problems = compile_constraint(schema, lists, (*where, tool))
        issues.extend(problems)
        if check is not None:
            compiled[tool] = check
    return compiled
