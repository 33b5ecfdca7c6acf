"""The console responder: an alert line per finding, naming the responder from the matrix (embedded default)."""

from __future__ import annotations

import logging

from warden import metrics
from warden.findings import Finding

log = logging.getLogger("warden.alert")


def render_alert(finding: Finding) -> str:
    """One line a human can act on; every field is already redacted, and nothing here is secret."""
    who = finding.owners.responder
    evidence = ", ".join(f"{k}={v!r}" for k, v in finding.evidence.items())
    return (
        f"ALERT [{finding.severity.value}] rule={finding.rule} agent={finding.agent_id} "
        f"workflow={finding.workflow or '(unowned)'} responder={who.id}"
        f"{f' ({who.name})' if who.name else ''} frameworks={','.join(finding.frameworks)} "
        f"evidence: {evidence}"
    )


class ConsoleResponder:
    """Logs each routed finding once; shadow findings are recorded but not routed."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    async def start(self) -> None:
        return None

    async def handle(self, finding: Finding) -> None:
        if finding.shadow or finding.finding_id in self._seen:
            return
        self._seen.add(finding.finding_id)
        log.warning(render_alert(finding))
        metrics.ALERTS.labels(channel="console", rule=finding.rule).inc()

    async def stop(self) -> None:
        return None
