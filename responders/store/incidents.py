"""Incidents: a finding opens one or groups into the active one, and people move its lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders import storms
from responders.db import session_factory
from responders.db.models import FindingRecord, Incident, Notification, NotifyGroup
from responders.digests import raised
from responders.incidents import ACTIVE, IncidentView, Status, escalation_deadline, escalation_note, incident_key, joins
from responders.notify_control import NotifyPolicy, PolicySource
from responders.store.common import clean, evidence_of, rowcount
from responders.store.decisions import Decisions
from responders.store.notices import NoticeKind, Pending
from responders.store.outbox import Outbox
from responders.store.timeline import Timeline
from responders.store.views import decision_of, steps_of, view_of
from warden.contract.actors import Actor
from warden.contract.findings import Finding, FindingOwners, OwnerRef
from warden.contract.matchers import exact_matcher
from warden.contract.matrix import Matrix, Tier


class Recorded(StrEnum):
    duplicate = "duplicate"  # this finding id was handled before: nothing changed
    shadow = "shadow"  # a shadow-mode rule: recorded, never routed
    opened = "opened"
    grouped = "grouped"
    promoted = "promoted"  # grouped, and raised the incident's tier (a page joining a review incident pages it)


class Incidents:
    """Records findings as incidents (opening, grouping, raising the tier, paging) and lifecycle moves, each in one
    transaction with its timeline entries, proposals and outbox rows. `live_matrix` gives the live matrix (sha256,
    matrix) whose `notifications` control pages; None: the built-in defaults."""

    def __init__(self, engine: AsyncEngine, timeline: Timeline, outbox: Outbox, decisions: Decisions, *,
                 live_matrix: Callable[[], tuple[str, Matrix]] | None = None) -> None:
        self.sessions = session_factory(engine)
        self.timeline = timeline
        self.outbox = outbox
        self.decisions = decisions
        self.live_matrix = live_matrix
        self._policies = PolicySource()

    def notify_policy(self) -> NotifyPolicy:
        return self._policies.get(self.live_matrix)

    # -- findings -> incidents ---------------------------------------------------------------------------------

    async def record_finding(self, finding: Finding, now: datetime, control: list[str] | None = None) -> Recorded:
        """Open an incident or group into the active one, and record the outbox rows, in one transaction. What
        notification control decided for a page (leader, member, silenced, inhibited) is appended to `control`."""
        async with self.sessions.begin() as s:
            if await s.get(FindingRecord, finding.finding_id) is not None:
                return Recorded.duplicate
            record = FindingRecord(
                finding_id=finding.finding_id, rule=finding.rule, agent_id=clean(finding.agent_id),
                event_id=clean(finding.event_id), severity=finding.severity.value, shadow=finding.shadow,
                ts=finding.ts, evidence=evidence_of(finding), recorded_at=now,
            )
            if finding.shadow:
                s.add(record)
                return Recorded.shadow
            target = clean(finding.target)
            key = incident_key(finding.rule, record.agent_id, target)
            active = (await s.execute(
                select(Incident).where(Incident.open_key == key).with_for_update()
            )).scalar_one_or_none()
            if active is not None and joins(active.last_seen, finding.ts, finding.group_window_s):
                promoted = await self._group(s, active, finding, record, now=now, control=control)
                record.incident_id = active.id
                s.add(record)
                return Recorded.promoted if promoted else Recorded.grouped
            if active is not None:  # the window has passed: the next repeat opens a fresh incident
                active.open_key = None
                await s.flush()
            incident = await self._open(s, finding, key=key, target=target, record=record, now=now, control=control)
            if active is not None:
                await self.timeline.log_entry(s, active.id, now, "superseded", detail={"by_incident": incident.id})
            record.incident_id = incident.id
            s.add(record)
            return Recorded.opened

    async def _open(self, s: AsyncSession, finding: Finding, *, key: str, target: str, record: FindingRecord,
                    now: datetime, control: list[str] | None = None) -> Incident:
        """A new incident at the finding's tier: a page notifies and escalates (and proposes containment); review
        and log are recorded only, review waiting for its responder's next digest (docs/incidents.md, tiers)."""
        owners = finding.owners
        tier = finding.tier.on_event_path()
        incident = Incident(
            key=key, open_key=key, status=Status.open.value, rule=finding.rule, severity=finding.severity.value,
            title=clean(finding.title), agent_id=record.agent_id,
            workflow=clean(finding.workflow) if finding.workflow else None,
            target=target, frameworks=list(finding.frameworks),
            tags=[clean(t) for t in finding.tags], evidence=record.evidence,
            owners=owners.model_dump(mode="json"), policy_sha256=finding.policy_sha256, count=1,
            first_seen=finding.ts, last_seen=finding.ts, opened_at=now, updated_at=now, escalation_step=0,
            escalate_at=None, tier=tier.value, review_pending_since=now if tier is Tier.review else None,
        )
        s.add(incident)
        await s.flush()
        await self.timeline.log_entry(s, incident.id, now, "opened", detail={
            "finding_id": finding.finding_id, "tier": tier.value, "responder": owners.responder.id,
            "approver": owners.approver.id if owners.approver else None,
            "escalation": [step.owner.id for step in owners.escalation], "policy_sha256": finding.policy_sha256,
        })
        if tier is Tier.page:
            await self._page(s, incident, finding, now, control)
        elif tier is Tier.review:
            await self.timeline.log_entry(s, incident.id, now, "kept_for_review", detail={
                "finding_id": finding.finding_id, "digest_to": owners.responder.id})
        else:
            await self.timeline.log_entry(s, incident.id, now, "logged", detail={"finding_id": finding.finding_id})
        return incident

    async def _page(self, s: AsyncSession, incident: Incident, finding: Finding, now: datetime,
                    control: list[str] | None = None) -> None:
        """Page the responder, for an incident opened as a page or raised to one: the finding's containment (always:
        a silence mutes people, not playbooks), then notification control decides who hears of it now."""
        incident.escalation_step = 0
        await self.decisions.propose(s, incident, finding, now)
        await self._announce(s, incident, now, control)

    async def _announce(self, s: AsyncSession, incident: Incident, now: datetime,
                        control: list[str] | None = None) -> None:
        """Inhibition, silences, grouping (responders/storms.py). A page that leads its group gets its escalation
        from now and its root message (plus the first step of the chain when that is someone else), due after the
        group wait; a member is carried by its group's digest and a muted page tells nobody: neither escalates."""
        verdict = await storms.decide(self.timeline, s, incident, now, policy=self.notify_policy(),
                                      notifiers=self.outbox.notifiers)
        if control is not None:
            control.append(verdict.kind)
        if verdict.kind != storms.LEADER:
            incident.escalate_at = None
            return
        owners = FindingOwners.model_validate(incident.owners)
        incident.escalate_at = escalation_deadline(owners.escalation, incident.escalation_step, now)
        await self.outbox.add_notifications(s, incident.id, NoticeKind.root, owners.responder, now=now, at=verdict.at)
        first = owners.escalation[0].owner if owners.escalation else None
        if first is not None and first.id != owners.responder.id:
            await self.outbox.add_notifications(s, incident.id, NoticeKind.escalation, first, now=now,
                                                note=escalation_note(owners, 0), at=verdict.at)

    async def _group(self, s: AsyncSession, incident: Incident, finding: Finding, record: FindingRecord, *,
                     now: datetime, control: list[str] | None = None) -> bool:
        """A repeat joins the incident. What it does next follows the incident's tier, which a higher finding
        raises (never lowers): a page repeat is announced in the root's thread, a review one waits for the digest,
        a log one is only counted. True when this finding raised the tier."""
        incident.count += 1
        incident.last_seen = max(incident.last_seen, finding.ts)
        incident.evidence = record.evidence
        incident.updated_at = now
        await self.timeline.log_entry(s, incident.id, now, "grouped", detail={
            "finding_id": finding.finding_id, "count": incident.count, "tier": finding.tier.on_event_path().value})
        higher = raised(Tier(incident.tier), finding.tier)
        if higher is not None:
            await self.timeline.log_entry(s, incident.id, now, "tier_raised", detail={
                "finding_id": finding.finding_id, "from": incident.tier, "to": higher.value})
            incident.tier = higher.value
            if higher is Tier.page:  # paged now: the root message tells everything a digest would have
                incident.review_pending_since = None
                await self._page(s, incident, finding, now, control)
                return True
        if incident.tier == Tier.review.value:
            if finding.tier.on_event_path() is Tier.review and incident.review_pending_since is None:
                incident.review_pending_since = now  # seen again since its last digest: in the next one
            return higher is not None
        if incident.tier != Tier.page.value:
            return higher is not None
        # A silence or an inhibiting incident mutes repeats too (made after the page, it stops the thread replies);
        # once it ends, a page that was never announced is announced now (it pages or joins its group's digest).
        announced = incident.group_role is not None or incident.group_id is not None or (
            incident.silenced_by is None and incident.inhibited_by is None)
        if await storms.mute(self.timeline, s, incident, now, policy=self.notify_policy()) is not None:
            return False
        if not announced:
            await self._announce(s, incident, now, control)
            return False
        # One unsent repeat notice per incident and notifier is enough: it renders the latest count when it goes
        # out. (A claim locks the incident row too, so it cannot read the old count while this transaction adds.)
        unsent = set((await s.execute(select(Notification.notifier).where(
            Notification.incident_id == incident.id, Notification.kind == NoticeKind.repeat.value,
            Notification.status == Pending.pending.value, Notification.claimed_until.is_(None),
        ))).scalars())
        responder = FindingOwners.model_validate(incident.owners).responder
        await self.outbox.add_notifications(s, incident.id, NoticeKind.repeat, responder, now=now,
                                            only=[n for n in self.outbox.notifiers if n not in unsent])
        return False

    async def incident(self, incident_id: int) -> IncidentView | None:
        async with self.sessions.begin() as s:
            row = await s.get(Incident, incident_id)
            return None if row is None else view_of(row, await decision_of(s, incident_id),
                                                 await steps_of(s, incident_id))

    async def transition(self, incident_id: int, expected: Status, target: Status, *, owner: OwnerRef,
                         by: Actor, note: str, now: datetime) -> bool:
        """Move the lifecycle if it is still where the clicker saw it; False when someone else moved it first."""
        values: dict[str, Any] = {"status": target.value, "status_by": owner.id, "updated_at": now,
                                  "escalate_at": None}
        if target not in ACTIVE:
            values["open_key"] = None
        async with self.sessions.begin() as s:
            moved = await s.execute(update(Incident).where(
                Incident.id == incident_id, Incident.status == expected.value,
            ).values(**values))
            if rowcount(moved) != 1:
                return False
            await self.timeline.log_entry(s, incident_id, now, target.value, actor=owner.id,
                                          by=by, detail={"from": expected.value})
            owners = FindingOwners.model_validate(
                (await s.execute(select(Incident.owners).where(Incident.id == incident_id))).scalar_one()
            )
            await self.outbox.add_notifications(s, incident_id, NoticeKind.update, owners.responder, now=now, note=note)
            return True

    async def silence_matchers(self, incident_id: int) -> list[str]:
        """What a "Silence 1 h" click on this incident mutes: its group's labels (the pages its digest collects),
        or, without a group, its workflow, rule and agent."""
        async with self.sessions.begin() as s:
            row = await s.get(Incident, incident_id)
            if row is None:
                raise LookupError(f"incident #{incident_id} does not exist")
            labels: dict[str, str] = {}
            if row.group_id is not None:
                group = await s.get(NotifyGroup, row.group_id)
                labels = {str(k): str(v) for k, v in dict(group.labels).items()} if group is not None else {}
            if not labels:
                labels = {"workflow": row.workflow or "", "rule": row.rule, "agent": row.agent_id}
            return [exact_matcher(label, value) for label, value in labels.items()]

    async def counts(self, since: datetime | None = None) -> dict[str, int]:
        """Incidents opened or updated, and notifications delivered: all of them, or those since `since`."""
        incidents = select(func.count()).select_from(Incident)
        delivered = select(func.count()).select_from(Notification).where(
            Notification.status == Pending.delivered.value)
        if since is not None:
            incidents = incidents.where(Incident.updated_at >= since)
            delivered = delivered.where(Notification.delivered_at >= since)
        async with self.sessions.begin() as s:
            return {"incidents": (await s.execute(incidents)).scalar_one(),
                    "notifications": (await s.execute(delivered)).scalar_one()}
