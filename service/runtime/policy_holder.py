"""Holds the live policy so a reload swaps it atomically between two events."""

from __future__ import annotations

from warden.policy import Policy
from warden.telemetry import metrics


class PolicyHolder:
    """The one reference every stage reads; replacing `current` is a single atomic assignment."""

    def __init__(self, policy: Policy) -> None:
        self.current = policy
        metrics.POLICY_INFO.labels(sha256=policy.sha256).set(1)
        metrics.POLICY_RELOAD_OK.set(1)

    def swap(self, policy: Policy) -> None:
        old = self.current
        self.current = policy
        if old.sha256 != policy.sha256:
            metrics.POLICY_INFO.remove(old.sha256)
        metrics.POLICY_INFO.labels(sha256=policy.sha256).set(1)
