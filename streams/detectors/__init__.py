"""Detector registry and the detect stage: `(event, policy, state) -> findings`, every rule per event."""

from __future__ import annotations

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
from streams.detectors.base import Context, Detector
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.policy import Policy

# Every built-in detector, in the order they run. Adding a detector = one module + one line here.
DETECTORS: tuple[Detector, ...] = (
    unowned_agent,
    unapproved_tool,
    secret_access,
    data_out_of_scope,
    unreviewed_identity_change,
    retry_loop,
    tool_burst,
)
REGISTRY: dict[str, Detector] = {d.info.id: d for d in DETECTORS}


class DetectorState:
    """Windowed state of the stateful detectors (each keys its own by agent or session); survives policy reloads."""

    def __init__(self) -> None:
        self.by_rule: dict[str, Any] = {d.info.id: d.new_state() for d in DETECTORS}


def detect(event: ActivityEvent, policy: Policy, state: DetectorState) -> list[Finding]:
    """Run every enabled built-in detector, then every custom rule. No first-match shadowing."""
    ctx = Context.of(event, policy)
    overrides = policy.matrix.rules.builtin
    findings: list[Finding] = []
    for rule_id, detector in REGISTRY.items():
        cfg = overrides.get(rule_id)
        if cfg is None or cfg.enabled:
            findings.extend(detector.detect(ctx, state.by_rule[rule_id]))
    findings.extend(custom.detect(ctx))
    return findings
