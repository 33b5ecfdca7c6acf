"""Cross-references of argument constraints, flow rules and the tool catalogue that the schema cannot see."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from warden.contract.matrix import Matrix
from warden.policy.globs import GlobSet
from warden.policy.scope_checks import SESSION_TTL, UNTRUSTED_FLOW

Issue = Callable[..., None]
_GLOB_CHARS = "*?["


def check_scope(matrix: Matrix, rule_ids: set[str], issue: Issue) -> set[str]:
    """Report located issues; return the flow rule ids (playbooks may name them)."""
    flow_ids: set[str] = set()
    filed = {c for spec in matrix.tools.values() for c in spec.categories}
    for wf_id, wf in matrix.workflows.items():
        base = ("workflows", wf_id, "scope")
        allowed = GlobSet.of(wf.scope.tools)
        _tools_allowed(wf.scope.arguments, allowed, (*base, "arguments"), issue)
        _tools_allowed(wf.scope.untrusted_flow.unless, allowed, (*base, "untrusted_flow", "unless"), issue)
        _within_ttl(wf.scope.untrusted_flow.within, (*base, "untrusted_flow", "within"), issue)
        seen: set[str] = set()
        for i, flow in enumerate(wf.scope.flows):
            where = (*base, "flows", str(i))
            if flow.id in rule_ids or flow.id == UNTRUSTED_FLOW or flow.id in seen:
                issue((*where, "id"), f"rule id {flow.id!r} is already used")
            seen.add(flow.id)
            _tools_allowed(flow.unless, allowed, (*where, "unless"), issue)
            _within_ttl(flow.within, (*where, "within"), issue)
            for key, categories in (("after", flow.after), ("then", flow.then)):
                for j, category in enumerate(categories):
                    if category not in filed:
                        issue((*where, key, str(j)), f"no tool in the catalogue (`tools:`) is filed under "
                              f"{category.value!r}: the rule can never fire", "warning")
        flow_ids |= seen
        for j, category in enumerate(wf.scope.approvals.categories):
            gate_at = (*base, "approvals", "categories", str(j))
            if category not in filed:
                issue(gate_at, f"no tool in the catalogue (`tools:`) is filed under {category.value!r}: the "
                      "approval gate can never apply", "warning")
    _resource_paths(matrix, issue)
    return flow_ids


def _tools_allowed(schemas: Mapping[str, Any], allowed: GlobSet, where: tuple[str, ...], issue: Issue) -> None:
    for tool in schemas:
        if any(c in tool for c in _GLOB_CHARS):
            issue((*where, tool), f"{tool!r} must be an exact tool name: constraints and exceptions are looked up "
                  "by the called tool's name, so a glob here would never apply (write one entry per tool)")
        elif not allowed.matches(tool):
            issue((*where, tool), f"constraints for {tool!r}, a tool the scope does not allow (scope.tools: "
                  f"{allowed})")


def _within_ttl(within: Any, where: tuple[str, ...], issue: Issue) -> None:
    if within is not None and within > SESSION_TTL:
        issue(where, f"{within} is longer than the {SESSION_TTL} a session's flow state is kept")


def _resource_paths(matrix: Matrix, issue: Issue) -> None:
    """A catalogue `resource` path must name a property wherever a constraint on that tool lists its properties:
    an error when the constraint allows no other properties, a warning otherwise."""
    for name, spec in matrix.tools.items():
        if spec.resource is None:
            continue
        head = spec.resource.split(".")[0]
        for wf_id, schema in _constraints_for(matrix, name):
            props = schema.get("properties")
            if isinstance(props, dict) and head not in props:
                closed = schema.get("additionalProperties") is False  # then the argument can never be there
                issue(("tools", name, "resource"),
                      f"argument path {spec.resource!r} is not among the properties that workflow {wf_id!r} "
                      f"constrains for this tool ({', '.join(sorted(props)) or 'none'})"
                      + (", which allows no others" if closed else ""), "error" if closed else "warning")
                break


def _constraints_for(matrix: Matrix, pattern: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for wf_id, wf in matrix.workflows.items():
        for tool, schema in wf.scope.arguments.items():
            if tool == pattern or fnmatchcase(tool, pattern):
                yield wf_id, schema
