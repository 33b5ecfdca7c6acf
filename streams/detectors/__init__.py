"""Detector registry and the detect stage: `(event, policy, state) -> findings`, every rule per event."""

from __future__ import annotations

from collections.abc import Callable

from streams.detectors import unapproved_tool
from streams.detectors.base import Context, RuleInfo
from warden.events import ActivityEvent
from warden.findings import Finding
from warden.policy import Policy

# One entry per built-in detector: rule id -> (info, pure function). Adding a detector = one module + one line.
REGISTRY: dict[str, tuple[RuleInfo, Callable[[Context, object], list[Finding]]]] = {
    unapproved_tool.info.id: (unapproved_tool.info, unapproved_tool.detect),
}


class DetectorState:
    """Windowed state for the stateful detectors, keyed by agent or session inside each detector."""

    def __init__(self) -> None:
        self.by_rule: dict[str, object] = {}

    def for_rule(self, rule_id: str) -> object:
        return self.by_rule.get(rule_id)


def detect(event: ActivityEvent, policy: Policy, state: DetectorState) -> list[Finding]:
    """Run every enabled detector on one event. No first-match shadowing: all rules are evaluated."""
    ctx = Context.of(event, policy)
    findings: list[Finding] = []
    for rule_id, (_, fn) in REGISTRY.items():
        findings.extend(fn(ctx, state.for_rule(rule_id)))
    return findings
