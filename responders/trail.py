"""Reading the audit trail: incidents with their timelines for the API, the CLI and the evidence page, and the
hash chains for `warden audit verify`. Read-only by design: nothing here writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from responders.audit import (
    SECURITY_CHAIN,
    Break,
    Link,
    approval_chain,
    approval_content,
    security_content,
    silence_chain,
    silence_content,
    timeline_content,
    verify,
)
from responders.db import session_factory
from responders.db.models import (
    ApprovalEntry,
    ContainmentStep,
    Incident,
    SecurityEvent,
    SilenceEntry,
    TimelineEntry,
)

PAGE_MAX = 200
SEVERITIES = ("low", "medium", "high", "critical")
TIERS = ("page", "review", "log")


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    workflow: str | None = None
    severity: str | None = None
    since: datetime | None = None
    tier: str | None = None
    group: int | None = None


@dataclass(frozen=True)
class Verification:
    chains: int
    entries: int
    breaks: list[Break]

    @property
    def ok(self) -> bool:
        return not self.breaks

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "chains": self.chains, "entries": self.entries,
                "breaks": [b.as_json() for b in self.breaks]}


def incident_json(row: Incident) -> dict[str, Any]:
    """An incident as the API and the CLI show it (every string already redacted when it was recorded)."""
    owners = row.owners or {}
    return {
        "id": row.id, "status": row.status, "status_by": row.status_by, "tier": row.tier, "rule": row.rule,
        "severity": row.severity,
        "title": row.title, "agent_id": row.agent_id, "workflow": row.workflow, "target": row.target,
        "count": row.count, "first_seen": row.first_seen.isoformat(), "last_seen": row.last_seen.isoformat(),
        "opened_at": row.opened_at.isoformat(), "updated_at": row.updated_at.isoformat(),
        "escalation_step": row.escalation_step, "policy_sha256": row.policy_sha256,
        "frameworks": list(row.frameworks), "tags": list(row.tags), "evidence": dict(row.evidence),
        "owners": owners, "group": row.group_id, "group_role": row.group_role, "silenced_by": row.silenced_by,
        "inhibited_by": row.inhibited_by,
    }


def entry_json(row: TimelineEntry) -> dict[str, Any]:
    return {"seq": row.seq, "at": row.at.isoformat(), "kind": row.kind, "actor": row.actor,
            "identity": row.identity, "policy_sha256": row.policy_sha256, "detail": dict(row.detail),
            "prev_hash": row.prev_hash, "hash": row.hash}


def step_json(row: ContainmentStep) -> dict[str, Any]:
    return {"playbook": row.playbook, "step": row.step, "action": row.action, "status": row.status,
            "gate": row.gate, "decided_by": row.decided_by, "attempts": row.attempts, "dry_run": row.dry_run,
            "detail": dict(row.detail), "ended_at": None if row.ended_at is None else row.ended_at.isoformat()}


def _filtered(query: Select[Any], f: Filters) -> Select[Any]:
    if f.status:
        query = query.where(Incident.status == f.status)
    if f.workflow:
        query = query.where(Incident.workflow == f.workflow)
    if f.severity:
        query = query.where(Incident.severity == f.severity)
    if f.since is not None:
        query = query.where(Incident.updated_at >= f.since)
    if f.tier:
        query = query.where(Incident.tier == f.tier)
    if f.group is not None:
        query = query.where(Incident.group_id == f.group)
    return query


class Trail:
    """The read side of the incident database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = session_factory(engine)

    async def incidents(self, f: Filters, *, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """One page of incidents, newest first, and how many match in all."""
        limit = max(1, min(limit, PAGE_MAX))
        async with self.sessions.begin() as s:
            total = (await s.execute(_filtered(select(func.count()).select_from(Incident), f))).scalar_one()
            rows = (await s.execute(_filtered(select(Incident), f).order_by(Incident.id.desc())
                                    .limit(limit).offset(max(0, offset)))).scalars()
            return int(total), [incident_json(r) for r in rows]

    async def incident(self, incident_id: int) -> dict[str, Any] | None:
        """The incident with its timeline (chain order), its containment ledger and whether its chain verifies."""
        async with self.sessions.begin() as s:
            row = await s.get(Incident, incident_id)
            if row is None:
                return None
            entries = list((await s.execute(select(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
                                            .order_by(TimelineEntry.seq, TimelineEntry.id))).scalars())
            steps = list((await s.execute(select(ContainmentStep).where(ContainmentStep.incident_id == incident_id)
                                          .order_by(ContainmentStep.id))).scalars())
        _, _, breaks = verify(_timeline_link(e) for e in entries)
        return {**incident_json(row), "timeline": [entry_json(e) for e in entries],
                "containment": [step_json(st) for st in steps],
                "chain": {"ok": not breaks, "entries": len(entries), "breaks": [b.as_json() for b in breaks]}}

    async def open_counts(self) -> dict[tuple[str, str], int]:
        """Incidents not closed (open or acknowledged), by severity and tier; every pair present, 0 when none.
        Review and log incidents stay open until someone closes them, hence the tier: alert on `tier="page"`."""
        async with self.sessions.begin() as s:
            rows = (await s.execute(select(Incident.severity, Incident.tier, func.count()).where(
                Incident.status.in_(["open", "acknowledged"])).group_by(Incident.severity, Incident.tier))).all()
        counts = dict.fromkeys(((sev, tier) for sev in SEVERITIES for tier in TIERS), 0)
        counts.update({(severity, tier): int(n) for severity, tier, n in rows})
        return counts

    async def verify(self, incident_ids: Sequence[int] | None = None) -> Verification:
        """Recompute every chain (or only the given incidents'), naming the first broken link of each."""
        query = select(TimelineEntry).order_by(TimelineEntry.incident_id, TimelineEntry.seq, TimelineEntry.id)
        if incident_ids is not None:
            query = query.where(TimelineEntry.incident_id.in_(list(incident_ids)))
        async with self.sessions.begin() as s:
            entries = list((await s.execute(query)).scalars())
            security = [] if incident_ids is not None else list((await s.execute(
                select(SecurityEvent).order_by(SecurityEvent.seq, SecurityEvent.id))).scalars())
            approvals = [] if incident_ids is not None else list((await s.execute(
                select(ApprovalEntry).order_by(ApprovalEntry.approval_id, ApprovalEntry.seq, ApprovalEntry.id)
            )).scalars())
            silenced = [] if incident_ids is not None else list((await s.execute(
                select(SilenceEntry).order_by(SilenceEntry.silence_id, SilenceEntry.seq, SilenceEntry.id)
            )).scalars())
        links = ([_timeline_link(e) for e in entries] + [_security_link(e) for e in security]
                 + [approval_link(e) for e in approvals] + [silence_link(e) for e in silenced])
        chains, count, breaks = verify(links)
        return Verification(chains, count, breaks)


def _timeline_link(row: TimelineEntry) -> Link:
    return Link(str(row.incident_id), row.id, row.seq, row.prev_hash, row.hash, timeline_content(
        incident_id=row.incident_id, at=row.at, kind=row.kind, actor=row.actor, identity=row.identity,
        policy_sha256=row.policy_sha256, detail=row.detail))


def _security_link(row: SecurityEvent) -> Link:
    return Link(SECURITY_CHAIN, row.id, row.seq, row.prev_hash, row.hash,
                security_content(at=row.at, source=row.source, kind=row.kind, detail=row.detail))


def silence_link(row: SilenceEntry) -> Link:
    return Link(silence_chain(row.silence_id), row.id, row.seq, row.prev_hash, row.hash, silence_content(
        silence_id=row.silence_id, at=row.at, kind=row.kind, actor=row.actor, identity=row.identity,
        detail=row.detail))


def approval_link(row: ApprovalEntry) -> Link:
    return Link(approval_chain(row.approval_id), row.id, row.seq, row.prev_hash, row.hash, approval_content(
        approval_id=row.approval_id, at=row.at, kind=row.kind, actor=row.actor, identity=row.identity,
        policy_sha256=row.policy_sha256, detail=row.detail))
