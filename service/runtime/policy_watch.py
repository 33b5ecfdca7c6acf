"""Hot reload: watch the policy files, validate a change in a shadow copy, then swap it in or keep the old one.

An invalid change never goes live: the old policy keeps running, the reload gauge drops to 0, every located
issue is logged, and a critical `policy_invalid` finding is published on `warden.findings`, so it reaches the
default security owner like any other alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from service.runtime.catalogue import load
from service.runtime.policy_holder import PolicyHolder
from warden.contract.findings import Finding, finding_id
from warden.contract.matrix import Severity
from warden.contract.redact import redact_text
from warden.kit.loop import PollingLoop
from warden.policy import Policy, PolicyError, PolicyIssue, policy_files
from warden.telemetry import metrics

log = logging.getLogger("warden.policy")

POLICY_INVALID = "policy_invalid"
MAX_ISSUES_IN_EVIDENCE = 20
Fingerprint = tuple[tuple[str, int, int, int], ...]


def fingerprint(path: Path) -> Fingerprint:
    """What changes when any policy file is edited, replaced, added or removed (name, inode, size, mtime)."""
    if not path.exists():
        return ()
    out = []
    for f in policy_files(path):
        st = f.stat()
        out.append((str(f), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def invalid_policy_finding(live: Policy, path: Path, issues: list[PolicyIssue]) -> Finding:
    """The self-alert for a rejected change, routed like an unowned agent: to the default security owner."""
    event_id = f"policy-reload-{time.time_ns()}"
    evidence = {f"issue_{i + 1}": redact_text(str(issue)) for i, issue in enumerate(issues[:MAX_ISSUES_IN_EVIDENCE])}
    if len(issues) > MAX_ISSUES_IN_EVIDENCE:
        evidence["more_issues"] = str(len(issues) - MAX_ISSUES_IN_EVIDENCE)
    evidence["live_policy_sha256"] = live.sha256
    return Finding(
        finding_id=finding_id(event_id, POLICY_INVALID),
        rule=POLICY_INVALID,
        severity=Severity.critical,
        title="Policy change rejected; the previous policy stays live",
        frameworks=["NIST-AI-RMF:GOVERN"],
        agent_id="warden",
        workflow=None,
        event_id=event_id,
        event_kind="policy_reload",
        ts=datetime.now(UTC),
        target=str(path),
        evidence=evidence,
        owners=live.owners_for(None),
        policy_sha256=live.sha256,
    )


class PolicyWatcher:
    """Polls the policy every `interval_s`; a change is loaded once the files have stopped changing."""

    def __init__(self, path: Path, holder: PolicyHolder, publish: Callable[[Finding], Awaitable[None]],
                 interval_s: float) -> None:
        self.path = Path(path)
        self.holder = holder
        self.publish = publish
        self._loaded: Fingerprint | None = None  # None: check once at start, in case the files changed already
        self._pending: Fingerprint | None = None
        self.loop = PollingLoop("warden.policy_watch", interval_s, self.check, log)

    async def check(self) -> None:
        """One poll. A change seen twice in a row (so not mid-write) is loaded into a new Policy off the loop."""
        seen = await asyncio.to_thread(fingerprint, self.path)
        if seen == self._loaded:
            return
        if seen != self._pending:
            self._pending = seen
            return
        self._loaded = seen
        try:
            policy = await asyncio.to_thread(load, self.path)
        except PolicyError as exc:
            await self._reject(exc.issues)
            return
        live = self.holder.current
        if policy.sha256 != live.sha256:
            self.holder.swap(policy)
            log.warning("policy reloaded: sha256 %s -> %s", live.sha256[:12], policy.sha256[:12])
        metrics.POLICY_RELOAD_OK.set(1)

    async def _reject(self, issues: list[PolicyIssue]) -> None:
        live = self.holder.current
        metrics.POLICY_RELOAD_OK.set(0)
        for issue in issues:
            log.error("policy reload rejected (sha256 %s stays live): %s", live.sha256[:12], issue)
        await self.publish(invalid_policy_finding(live, self.path, issues))
