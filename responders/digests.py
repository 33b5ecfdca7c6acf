"""The response tiers' pure core: an incident's tier, when a review digest is due, and what a digest says."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from warden.contract.findings import OwnerRef
from warden.contract.matrix import Tier

TOP = 5  # agents and targets named in a digest, the most frequent first
LISTED = 20  # incident ids named in a digest; the rest are counted
MAX_INCIDENTS = 1000  # incidents one digest carries; more wait for the next one (each is a timeline entry)
_RANK = {Tier.log: 0, Tier.review: 1, Tier.page: 2}


def raised(current: Tier, finding: Tier) -> Tier | None:
    """The incident's new tier when a finding of tier `finding` joins it, or None when it stays: an incident's tier
    is the highest of its findings' (page over review over log) and never goes down."""
    finding = finding.on_event_path()
    return finding if _RANK[finding] > _RANK[current] else None


def period_end(now: datetime, interval: timedelta) -> datetime:
    """The latest digest boundary at or before `now`. Boundaries are multiples of the interval since the epoch, so
    every worker computes the same ones without talking to the others."""
    step = interval.total_seconds()
    return datetime.fromtimestamp((now.timestamp() // step) * step, UTC)


@dataclass(frozen=True)
class Member:
    """One review incident as a digest counts it (strings as recorded: redacted, not escaped)."""

    id: int
    rule: str
    workflow: str | None
    agent_id: str
    target: str
    count: int
    pending_since: datetime


@dataclass(frozen=True)
class RuleLine:
    rule: str
    workflow: str | None
    incidents: int
    findings: int


@dataclass(frozen=True)
class DigestView:
    """One review digest, as notifiers render it: the review incidents a responder had not been told about."""

    id: int
    responder: OwnerRef
    since: datetime
    until: datetime
    incidents: tuple[int, ...]
    findings: int
    by_rule: tuple[RuleLine, ...]
    agents: tuple[tuple[str, int], ...]
    targets: tuple[tuple[str, int], ...]
    waiting: int = 0  # review incidents of this responder left for the next digest (over MAX_INCIDENTS)

    @property
    def list_command(self) -> str:
        return f"warden incidents list --tier review --since {self.since.strftime('%Y-%m-%dT%H:%M:%S')}"

    @property
    def api_query(self) -> str:
        return f"GET /incidents?tier=review&since={self.since.strftime('%Y-%m-%dT%H:%M:%S')}%2B00:00"


def _top(values: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    counts: Counter[str] = Counter()
    for value, n in values:
        counts[value] += n
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP])


def summarise(members: Sequence[Member], *, until: datetime, waiting: int = 0) -> dict[str, Any]:
    """What a digest will say, as JSON to keep on its row: frozen when the digest is made, so every retry and every
    notifier sends the same content."""
    lines: dict[tuple[str, str | None], list[int]] = {}
    for m in members:
        line = lines.setdefault((m.rule, m.workflow), [0, 0])
        line[0] += 1
        line[1] += m.count
    return {
        "since": min(m.pending_since for m in members).isoformat(), "until": until.isoformat(),
        "incidents": sorted(m.id for m in members), "findings": sum(m.count for m in members),
        "by_rule": [[rule, workflow, n, f] for (rule, workflow), (n, f) in
                    sorted(lines.items(), key=lambda kv: (-kv[1][1], kv[0][0], kv[0][1] or ""))],
        "agents": [list(kv) for kv in _top((m.agent_id, m.count) for m in members)],
        "targets": [list(kv) for kv in _top((m.target, m.count) for m in members)],
        "waiting": waiting,
    }


def view_of_digest(digest_id: int, responder: OwnerRef, summary: dict[str, Any]) -> DigestView:
    return DigestView(
        id=digest_id, responder=responder, since=datetime.fromisoformat(summary["since"]),
        until=datetime.fromisoformat(summary["until"]), incidents=tuple(summary["incidents"]),
        findings=int(summary["findings"]),
        by_rule=tuple(RuleLine(r, w, int(n), int(f)) for r, w, n, f in summary["by_rule"]),
        agents=tuple((str(a), int(n)) for a, n in summary["agents"]),
        targets=tuple((str(t), int(n)) for t, n in summary["targets"]),
        waiting=int(summary.get("waiting", 0)),
    )
