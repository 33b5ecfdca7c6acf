"""Who gets a workflow's findings, as amtool's `routes show` answers it for Alertmanager: the named roles and their
channels, the escalation chain, the approval gates and the playbooks that can run, read from the compiled policy."""

from __future__ import annotations

from typing import Any

from warden.contract.matrix import ROLES, Workflow
from warden.policy.model import Policy


def resolve_workflow(policy: Policy, name: str) -> str | None:
    """A workflow id, given the id itself or one of its agents."""
    if name in policy.matrix.workflows:
        return name
    return policy.workflow_id_for(name)


def routes(policy: Policy, workflow_id: str) -> dict[str, Any]:
    """The routing of one workflow as plain data (the CLI prints it as text, a tree or JSON)."""
    wf = policy.matrix.workflows[workflow_id]
    owners = policy.owners_for(workflow_id)
    roles = {role: _owner(policy, getattr(wf, role)) for role in ROLES}
    roles["responder"] = _owner(policy, owners.responder.id)  # the security owner when the workflow names none
    chain = [{"step": n, "owner": _owner(policy, s.owner.id), "ack_timeout_s": s.ack_timeout.total_seconds(),
              "approves": s.approves} for n, s in enumerate(owners.escalation, 1)]
    return {
        "workflow": workflow_id, "description": wf.description, "agents": list(wf.agents), "risk": wf.risk.value,
        "mode": wf.mode.value, **roles, "escalation": chain,
        "channels": _channels([roles["responder"], *(_owner(policy, s.owner.id) for s in owners.escalation)]),
        "gates": _gates(policy, wf), "playbooks": _playbooks(policy, wf), "tiers": _tiers(policy, wf),
    }


def _owner(policy: Policy, owner_id: str | None) -> dict[str, Any] | None:
    if owner_id is None:
        return None
    owner = policy.owner(owner_id)
    if owner is None:
        return {"id": owner_id, "name": None, "kind": None, "contacts": {}, "members": {}}
    return {"id": owner_id, "name": owner.name, "kind": owner.kind, "contacts": dict(owner.contacts),
            "members": {n: list(ids) for n, ids in owner.members.items()}}


def _channels(owners: list[dict[str, Any] | None]) -> dict[str, list[str]]:
    """Per notifier, every address a finding of this workflow can reach, in the order it would be reached."""
    out: dict[str, list[str]] = {}
    for owner in owners:
        for notifier, address in (owner or {}).get("contacts", {}).items():
            if address not in out.setdefault(notifier, []):
                out[notifier].append(address)
    return out


def _gates(policy: Policy, wf: Workflow) -> list[dict[str, Any]]:
    """What a gateway must hold for a human before the agent acts."""
    gates: list[dict[str, Any]] = []
    ident = wf.scope.identity_changes
    if ident.require_approval:
        gates.append({"gate": "identity_changes", "operations": list(ident.require_approval),
                      "approval_from": ident.approval_from, "approver": getattr(wf, ident.approval_from),
                      "window_s": ident.window.total_seconds()})
    approvals = wf.scope.approvals
    if approvals.categories:
        gates.append({"gate": "categories", "categories": [c.value for c in approvals.categories],
                      "approver": wf.approver, "timeout_s": approvals.timeout.total_seconds()})
    gates += [{"gate": "custom_rule", "rule": r.id, "approver": wf.approver}
              for r in policy.matrix.rules.custom if r.gate == "approval"]
    return gates


def _playbooks(policy: Policy, wf: Workflow) -> list[dict[str, Any]]:
    """The bindings that can trigger for this workflow's risk tier, with the steps of the playbook they run."""
    out = []
    for binding in policy.matrix.playbooks:
        if binding.risk and wf.risk not in binding.risk:
            continue
        book = policy.playbooks.get(binding.playbook)
        out.append({"playbook": binding.playbook, "rules": list(binding.rules), "gate": binding.gate.value,
                    "min_severity": binding.min_severity.value,
                    "approval_timeout_s": binding.approval_timeout.total_seconds(),
                    "steps": [s.action for s in book.steps] if book else [],
                    "dry_run": book.dry_run if book else False})
    return out


def _tiers(policy: Policy, wf: Workflow) -> list[dict[str, Any]]:
    """The tier rules tried for this workflow's findings, in order (its own first); the built-in defaults last."""
    rules = [("workflow", t) for t in wf.tiers] + [("matrix", t) for t in policy.matrix.rules.tiers]
    return [{"from": origin, "rules": list(t.rules), "categories": [c.value for c in t.categories],
             "tier": t.tier.value, "approval": (t.approval or t.tier).value} for origin, t in rules]
