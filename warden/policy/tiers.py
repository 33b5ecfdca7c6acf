"""Response tiers: which findings page a responder, which hold an action for approval, which wait for the review
digest and which are only recorded. First match wins: the workflow's rules, the matrix's, then these defaults."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from warden.contract.matrix import Category, Tier, TierRule, Workflow

PROVENANCE = "provenance"
UNSOURCED_VALUE = "unsourced_value"
_PAGING = [Category.payment, Category.identity_admin]

# Provenance alone also fires on legitimate work (paying a bill read from a file, inviting someone named on a web
# page), so it pages only where a wrong value costs money or access, and elsewhere waits for review, or holds the
# action when it is asked for first. A value found nowhere (the model made it up) is weaker still.
DEFAULT_TIERS: tuple[TierRule, ...] = (
    TierRule(rules=[PROVENANCE], categories=_PAGING, tier=Tier.page),
    TierRule(rules=[PROVENANCE], tier=Tier.review, approval=Tier.hold),
    TierRule(rules=[UNSOURCED_VALUE], categories=_PAGING, tier=Tier.review, approval=Tier.hold),
    TierRule(rules=[UNSOURCED_VALUE], tier=Tier.log),
)


@dataclass(frozen=True)
class Tiers:
    """A finding's tier on the event path and on the approval path."""

    event: Tier
    approval: Tier


PAGE = Tiers(Tier.page, Tier.page)


def _applies(rule: TierRule, rule_id: str, categories: frozenset[Category]) -> bool:
    if rule.categories and not categories.intersection(rule.categories):
        return False
    return any(pattern == rule_id or fnmatchcase(rule_id, pattern) for pattern in rule.rules)


def resolve(rule_id: str, categories: frozenset[Category], workflow: Workflow | None,
            matrix_rules: Iterable[TierRule]) -> Tiers:
    """The first tier rule that names `rule_id` (and one of the call's tool categories, when it lists some)."""
    chain = [*(workflow.tiers if workflow is not None else ()), *matrix_rules, *DEFAULT_TIERS]
    for rule in chain:
        if _applies(rule, rule_id, categories):
            return Tiers(rule.tier.on_event_path(), rule.approval or rule.tier)
    return PAGE
