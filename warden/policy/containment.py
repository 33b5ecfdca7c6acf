"""Which playbooks a finding triggers (bindings resolved once per rule, severity and workflow) and their lint."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from warden.contract.containment import Gate, Plan, Playbook
from warden.contract.matrix import Matrix, PlaybookBinding, Severity, Workflow

ActionCheck = Callable[[Mapping[str, Any], Matrix], list[tuple[str, str]]]
"""Validates one step's params against its action (model and checks): (parameter path, reason) pairs."""

_ORDER = {s: i for i, s in enumerate(Severity)}


def playbooks_of(matrix: Matrix, shipped: Mapping[str, Playbook]) -> dict[str, Playbook]:
    """The shipped playbooks with the policy's own added; a policy playbook with a shipped id replaces it."""
    return {**shipped, **matrix.playbook_definitions}


def binds(binding: PlaybookBinding, rule: str, severity: Severity, workflow: Workflow | None) -> bool:
    """A binding matches a finding of one of its rules, at or above its severity, in one of its risk tiers (an
    agent no workflow lists has no tier: only a binding for every tier matches it)."""
    if rule not in binding.rules or _ORDER[severity] < _ORDER[binding.min_severity]:
        return False
    return not binding.risk or (workflow is not None and workflow.risk in binding.risk)


def plans(matrix: Matrix, playbooks: Mapping[str, Playbook], rule: str, severity: Severity,
          workflow: Workflow | None) -> list[Plan]:
    """The playbooks a finding triggers, in binding order, with the gate resolved for its severity."""
    out: list[Plan] = []
    for binding in matrix.playbooks:
        book = playbooks.get(binding.playbook)
        if book is None or not binds(binding, rule, severity, workflow):
            continue
        gate = binding.gate
        if gate is Gate.auto_if_critical:
            gate = Gate.auto if severity is Severity.critical else Gate.approver
        out.append(Plan(playbook=binding.playbook, gate=gate, approval_timeout=binding.approval_timeout,
                        on_failure=book.on_failure, dry_run=book.dry_run, steps=list(book.steps)))
    return out


def check_containment(matrix: Matrix, shipped: Mapping[str, Playbook], actions: Mapping[str, ActionCheck],
                      issue: Callable[..., None], rule_ids: set[str]) -> None:
    """Bindings name known playbooks and rules, and a gate that can be approved; every step of a policy playbook
    and of a bound shipped one names a known action with valid parameters."""
    books = playbooks_of(matrix, shipped)
    for book_id in matrix.playbook_definitions:
        if book_id in shipped:
            issue(("playbook_definitions", book_id), f"replaces the shipped playbook {book_id!r}", "warning")
    checked: set[str] = set()
    for i, binding in enumerate(matrix.playbooks):
        base = ("playbooks", str(i))
        if binding.playbook not in books:
            known = ", ".join(sorted(books))
            issue((*base, "playbook"), f"unknown playbook {binding.playbook!r} (known: {known})")
        elif binding.playbook not in matrix.playbook_definitions and binding.playbook not in checked:
            checked.add(binding.playbook)
            _check_steps(("playbooks", str(i), f"<shipped {binding.playbook}>"), books[binding.playbook], matrix,
                         actions, issue)
        for j, rule_id in enumerate(binding.rules):
            if rule_id not in rule_ids:
                issue((*base, "rules", str(j)), f"unknown rule id {rule_id!r}")
        if binding.gate is not Gate.auto:
            _check_approvers(base, binding, matrix, issue)
    for book_id, book in matrix.playbook_definitions.items():
        _check_steps(("playbook_definitions", book_id), book, matrix, actions, issue)


def _check_approvers(base: tuple[str, ...], binding: PlaybookBinding, matrix: Matrix,
                     issue: Callable[..., None]) -> None:
    """A gated playbook needs an approver who can act. A workflow naming none (or an undefined owner) is reported
    once, at the workflow; here: an approver that exists but that no notifier lets act (a person without a contact,
    a team without members) could never approve, so the playbook would wait for ever."""
    for wf_id, wf in matrix.workflows.items():
        if binding.risk and wf.risk not in binding.risk:
            continue
        owner = matrix.owners.get(wf.approver) if wf.approver else None
        if owner is None:
            continue
        can_act = any(owner.members.values()) if owner.kind == "team" else bool(owner.contacts)
        if not can_act:
            what = "members" if owner.kind == "team" else "contacts"
            issue((*base, "gate"), f"gate {binding.gate.value!r} waits for workflow {wf_id!r}'s approver "
                                   f"{wf.approver!r}, who has no {what} to approve with")


def _check_steps(base: tuple[str, ...], book: Playbook, matrix: Matrix, actions: Mapping[str, ActionCheck],
                 issue: Callable[..., None]) -> None:
    for k, step in enumerate(book.steps):
        where = (*base, "steps", str(k))
        check = actions.get(step.action)
        if check is None:
            known = ", ".join(sorted(actions)) or "none"
            issue((*where, "action"), f"unknown action {step.action!r} (known: {known})")
            continue
        for path, reason in check(step.params, matrix):
            issue((*where, "params", *(p for p in path.split(".") if p)), reason)
