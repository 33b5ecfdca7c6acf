"""Detector registry and the detect stage: `(event, policy, state) -> findings`, every rule per event."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from streams.detectors import (
    custom,
    data_out_of_scope,
    retry_loop,
    secret_access,
    tool_burst,
    unapproved_tool,
    unowned_agent,
    unreviewed_identity_change,
)
from streams.detectors.base import Context, RuleInfo
from warden.events import ActivityEvent
from warden.findings import Finding
from warden.policy import Policy

_MODULES: tuple[ModuleType, ...] = (
    unowned_agent,
    unapproved_tool,
    secret_access,
    data_out_of_scope,
    unreviewed_identity_change,
    retry_loop,
    tool_burst,
)
# One entry per built-in detector: rule id -> (info, pure function). Adding a detector = one module + one line.
REGISTRY: dict[str, tuple[RuleInfo, Callable[[Context, Any], list[Finding]]]] = {
    m.info.id: (m.info, m.detect) for m in _MODULES
}


class DetectorState:
    """Windowed state of the stateful detectors (each keys its own by agent or session); survives policy reloads."""

    def __init__(self) -> None:
        self.by_rule: dict[str, object] = {
            m.info.id: m.new_state() for m in _MODULES if hasattr(m, "new_state")
        }

    def for_rule(self, rule_id: str) -> object:
        return self.by_rule.get(rule_id)


def detect(event: ActivityEvent, policy: Policy, state: DetectorState) -> list[Finding]:
    """Run every enabled built-in detector, then every custom rule. No first-match shadowing."""
    ctx = Context.of(event, policy)
    overrides = policy.matrix.rules.builtin
    findings: list[Finding] = []
    for rule_id, (_, fn) in REGISTRY.items():
        cfg = overrides.get(rule_id)
        if cfg is None or cfg.enabled:
            findings.extend(fn(ctx, state.for_rule(rule_id)))
    findings.extend(custom.detect(ctx))
    return findings
