"""Detector registry and the detect stage: `(event, policy, state) -> findings`, every rule per event; and the
state those detectors keep, with what a replay needs (the offsets applied, `replay` to rebuild without findings)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from streams.detectors import (
    argument_out_of_scope,
    custom,
    data_out_of_scope,
    provenance,
    quarantine_breach,
    retry_loop,
    secret_access,
    tool_burst,
    unapproved_tool,
    unowned_agent,
    unreviewed_identity_change,
    untrusted_flow,
)
from streams.detectors.base import Context, Detector, stateless
from warden.contract.containment import QuarantineMark
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.policy import Policy

Bound = tuple[Callable[[Context, Any], list[Finding]], Any]  # a detector's detect function and its state

# Every built-in detector, in the order they run. Adding a detector = one module + one line here.
DETECTORS: tuple[Detector, ...] = (
    unowned_agent,
    unapproved_tool,
    secret_access,
    data_out_of_scope,
    unreviewed_identity_change,
    retry_loop,
    tool_burst,
    quarantine_breach,
    argument_out_of_scope,
    untrusted_flow,
    provenance,
)
REGISTRY: dict[str, Detector] = {d.info.id: d for d in DETECTORS}
# Rules a detector raises beside its own (configured under rules.builtin like it): the module's `also`.
RAISED_ALSO: dict[str, tuple[str, ...]] = {d.info.id: tuple(i.id for i in getattr(d, "also", ())) for d in DETECTORS}
RULE_IDS: frozenset[str] = (frozenset(REGISTRY) | {rule for also in RAISED_ALSO.values() for rule in also}
                             | {custom.RULE_ERROR.id})
STATEFUL: tuple[str, ...] = tuple(d.info.id for d in DETECTORS if d.new_state is not stateless)
# Detectors that run even when their own rule is disabled: untrusted_flow also carries the workflows' own flow
# rules and keeps the session trail they share (it skips only the built-in rule then).
_ALWAYS_RUN = frozenset({untrusted_flow.info.id})


class DetectorState:
    """Windowed state of the stateful detectors (each keys its own by agent or session); survives policy reloads.

    It also remembers the highest offset applied from each (topic, partition), so that a message read again (a
    rebalance re-reads a kept partition from its last committed offset) is recognised and not counted twice:
    ask `first_time` before applying a message.
    """

    def __init__(self, quarantined: Mapping[str, QuarantineMark] | None = None) -> None:
        self.by_rule: dict[str, Any] = {d.info.id: d.new_state() for d in DETECTORS}
        self.rule_errors = custom.RuleErrors()  # the custom rules' evaluation errors, reported once per interval
        # Agents quarantined on warden.control: the worker's live view, shared by every partition's state.
        self.quarantined: Mapping[str, QuarantineMark] = quarantined if quarantined is not None else {}
        self._applied: dict[tuple[str, int], int] = {}
        self._bound: tuple[_Plan | None, tuple[Bound, ...]] = (None, ())

    def bound(self, plan: _Plan) -> tuple[Bound, ...]:
        """Each of the plan's detectors with its state here, as (detect function, state): looked up once per
        plan, not once per detector and event."""
        if self._bound[0] is not plan:
            self._bound = (plan, tuple((d.detect, self.by_rule[rule_id]) for rule_id, d in plan.detect))
        return self._bound[1]

    def first_time(self, topic: str, partition: int, offset: int) -> bool:
        """True, and remembered, when `offset` is above every offset applied from that partition; False for a
        message this state has already applied (its events are counted, its findings were produced)."""
        tp = (topic, partition)
        if offset <= self._applied.get(tp, -1):
            return False
        self._applied[tp] = offset
        return True

    def applied(self, topic: str, partition: int) -> int | None:
        """The highest offset applied from that partition, or None if none was."""
        return self._applied.get((topic, partition))


def lookback(policy: Policy) -> timedelta:
    """How far back in event time the stateful detectors look under `policy`: the longest lookback any detector
    declares for any workflow. Rebuilding state needs the log that far back, no further."""
    return max((d.lookback(wf) for wf in policy.matrix.workflows.values() for d in DETECTORS), default=timedelta(0))


@dataclass(frozen=True)
class _Plan:
    """Which detectors run under one policy, with their state's key: worked out once per policy, not per event."""

    policy: Policy
    overrides: Mapping[str, Any]  # the policy's rule settings this plan was made from
    detect: tuple[tuple[str, Detector], ...]
    replay: tuple[tuple[str, Detector], ...]


_plans: list[_Plan] = []  # the last policy's plan (a reload makes a new Policy: the plan is made again)


def _plan(policy: Policy) -> _Plan:
    overrides = policy.matrix.rules.builtin
    if _plans and _plans[0].policy is policy and _plans[0].overrides is overrides:
        return _plans[0]
    def enabled(rule_id: str) -> bool:
        cfg = overrides.get(rule_id)
        return cfg is None or cfg.enabled

    runs = tuple((rule_id, d) for rule_id, d in REGISTRY.items()
                 if rule_id in _ALWAYS_RUN or any(enabled(r) for r in (rule_id, *RAISED_ALSO[rule_id])))
    plan = _Plan(policy, overrides, runs, tuple((rule_id, d) for rule_id, d in runs if rule_id in STATEFUL))
    _plans[:] = [plan]
    return plan


def detect(event: ActivityEvent, policy: Policy, state: DetectorState) -> list[Finding]:
    """Run every enabled built-in detector, then every custom rule. No first-match shadowing."""
    ctx = Context.of(event, policy, state.quarantined)
    findings: list[Finding] = []
    for run, kept in state.bound(_plan(policy)):
        found = run(ctx, kept)
        if found:
            findings.extend(found)
    findings.extend(custom.detect(ctx, state.rule_errors))
    return findings


def replay(event: ActivityEvent, policy: Policy, state: DetectorState) -> None:
    """Apply an already-judged event to the state, as `detect` would, without its findings: rebuilding state
    from the log. Only the stateful detectors run (the stateless ones and the custom rules cannot change it)."""
    ctx = Context.of(event, policy)
    by_rule = state.by_rule
    for rule_id, detector in _plan(policy).replay:
        detector.detect(ctx, by_rule[rule_id])
