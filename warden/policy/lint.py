"""Cross-references the schema cannot see: named roles, defined owners, one workflow per agent, known ids."""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

from warden.contract.matrix import REQUIRED_ROLES, ROLES, Matrix, RuleMode, TierRule
from warden.policy.cel import RULE_ERROR
from warden.policy.containment import check_containment
from warden.policy.lint_scope import check_scope
from warden.policy.merge import Locator
from warden.policy.model import Catalogue, PolicyIssue


def check_matrix(matrix: Matrix, catalogue: Catalogue, locator: Locator) -> tuple[list[PolicyIssue], list[PolicyIssue]]:
    """Cross-references the schema cannot see: named roles, defined owners, one workflow per agent."""
    errors: list[PolicyIssue] = []
    warnings: list[PolicyIssue] = []

    def issue(path: tuple[str, ...], reason: str, level: str = "error") -> None:
        target = errors if level == "error" else warnings
        target.append(locator.issue(path, reason, level))

    used: set[str] = set()

    def ref(path: tuple[str, ...], owner_id: str) -> None:
        used.add(owner_id)
        if owner_id not in matrix.owners:
            issue(path, f"owner {owner_id!r} is referenced but not defined under owners")

    ref(("defaults", "security_owner"), matrix.defaults.security_owner)
    for i, step in enumerate(matrix.defaults.escalation):
        ref(("defaults", "escalation", str(i), "owner"), step.owner)
    for i, rule in enumerate(matrix.rules.custom):
        if rule.owner is not None:
            ref(("rules", "custom", str(i), "owner"), rule.owner)
    claimed: dict[str, str] = {}
    for wf_id, wf in matrix.workflows.items():
        base = ("workflows", wf_id)
        for role in REQUIRED_ROLES:
            if not getattr(wf, role):
                issue((*base, role), f"workflow has no named {role}")
        for role in ROLES:
            owner_id = getattr(wf, role)
            if owner_id:
                ref((*base, role), owner_id)
        for i, step in enumerate(wf.escalation):
            ref((*base, "escalation", str(i), "owner"), step.owner)
        for i, agent in enumerate(wf.agents):
            other = claimed.setdefault(agent, wf_id)
            if other != wf_id:
                issue((*base, "agents", str(i)), f"agent {agent!r} is already claimed by workflow {other!r}")
        if not wf.agents:
            issue((*base, "agents"), "workflow lists no agents", "warning")
        if not wf.scope.tools and not wf.scope.data and not wf.scope.secrets:
            issue((*base, "scope"), "scope is empty: every tool, data and secret access is out of scope", "warning")
        gate = wf.scope.identity_changes  # a missing approver is reported above; other roles are checked here
        if gate.require_approval and not getattr(wf, gate.approval_from) and gate.approval_from not in REQUIRED_ROLES:
            issue((*base, "scope", "identity_changes", "approval_from"),
                  f"identity changes need approval from the {gate.approval_from}, and the workflow names none")
    for owner_id in matrix.owners:
        if owner_id not in used:
            issue(("owners", owner_id), "owner is defined but never named in a role", "warning")
    _check_owners(matrix, catalogue, issue)
    _check_rule_ids(matrix, catalogue, issue)
    return errors, warnings


def _check_owners(matrix: Matrix, catalogue: Catalogue, issue: Callable[..., None]) -> None:
    """Members must be identities their notifier lets act."""
    for owner_id, owner in matrix.owners.items():
        for notifier, identities in owner.members.items():
            accepts = catalogue.actors.get(notifier)
            for i, identity in enumerate(identities):
                if accepts is not None and not accepts(identity):
                    issue(("owners", owner_id, "members", notifier, str(i)),
                          f"{identity!r} is not a {notifier} identity that can act (a user, not a channel)")


def _check_rule_ids(matrix: Matrix, catalogue: Catalogue, issue: Callable[..., None]) -> None:
    """Rule ids and playbook names must exist: a typo would silently disable an override or a playbook."""
    builtin = catalogue.rules
    errors_cfg = matrix.rules.builtin.get(RULE_ERROR)
    if errors_cfg is not None and (not errors_cfg.enabled or errors_cfg.mode is RuleMode.shadow):
        issue(("rules", "builtin", RULE_ERROR), "rule_error cannot be disabled or put in shadow mode: a rule that "
              "cannot be evaluated must reach its owner (set the custom rule's own `mode: shadow` while tuning it)")
    for rule_id in matrix.rules.builtin:
        if rule_id not in builtin:
            known = ", ".join(sorted(builtin))
            issue(("rules", "builtin", rule_id), f"unknown built-in rule {rule_id!r} (known: {known})")
    custom: set[str] = set()
    for i, rule in enumerate(matrix.rules.custom):
        if rule.id in builtin or rule.id in custom:
            issue(("rules", "custom", str(i), "id"), f"rule id {rule.id!r} is already used")
        custom.add(rule.id)
    custom |= check_scope(matrix, set(builtin) | custom, issue)  # the workflows' flow rule ids
    check_containment(matrix, catalogue.playbooks, catalogue.actions, issue, set(builtin) | custom)
    rule_ids = set(builtin) | custom
    tier_lists: list[tuple[tuple[str, ...], list[TierRule]]] = [(("rules", "tiers"), matrix.rules.tiers)]
    tier_lists += [(("workflows", wf_id, "tiers"), wf.tiers) for wf_id, wf in matrix.workflows.items()]
    for where, tier_rules in tier_lists:
        for i, tier in enumerate(tier_rules):
            for j, pattern in enumerate(tier.rules):
                if not any(fnmatchcase(rule_id, pattern) for rule_id in rule_ids):
                    issue((*where, str(i), "rules", str(j)),
                          f"{pattern!r} names no rule: a tier for it would never apply (rules: "
                          f"{', '.join(sorted(rule_ids))})")
