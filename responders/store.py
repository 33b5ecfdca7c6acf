"""Every database operation on incidents, each one short transaction, safe with several workers on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Result, case, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders import storms
from responders.audit import GENESIS, SECURITY_CHAIN, entry_hash, security_content, timeline_content
from responders.budget import Budget, lock_buckets, save_buckets, wait_for
from responders.budget import block as block_channel
from responders.db import session_factory
from responders.db.models import (
    ContainmentDecision,
    ContainmentStep,
    FindingRecord,
    Incident,
    IncidentMessage,
    Notification,
    NotifyGroup,
    ReviewDigest,
    SecurityEvent,
    SeenInteraction,
    TimelineEntry,
)
from responders.digests import DigestView, raised, view_of_digest
from responders.group_digest import GroupView
from responders.incidents import (
    ACTIVE,
    Decision,
    IncidentView,
    Status,
    StepStatus,
    StepView,
    escalation_deadline,
    escalation_note,
    incident_key,
    joins,
)
from responders.notifiers.base import NoticeKind, Posted
from responders.notify_control import NotifyPolicy, PolicySource
from warden.contract.containment import Gate
from warden.contract.findings import Finding, FindingOwners, OwnerRef
from warden.contract.matchers import exact_matcher
from warden.contract.matrix import Matrix, Tier
from warden.contract.redact import redact_text
from warden.telemetry import metrics

WARDEN = "warden"  # the actor of every entry Warden makes itself
RELEASE = "release"  # the ledger's playbook and action name of a quarantine release
UNTRUSTED_MAX_CHARS = 2000
_SECURITY_CHAIN_LOCK = 0x57A2DE5  # pg advisory lock id of the security events' chain


class Recorded(StrEnum):
    duplicate = "duplicate"  # this finding id was handled before: nothing changed
    shadow = "shadow"  # a shadow-mode rule: recorded, never routed
    opened = "opened"
    grouped = "grouped"
    promoted = "promoted"  # grouped, and raised the incident's tier (a page joining a review incident pages it)


class Pending(StrEnum):
    pending = "pending"
    delivered = "delivered"
    dead = "dead"


@dataclass(frozen=True)
class Claimed:
    """A notification this worker now holds the lease on, with what it needs to be sent: `root` is where its
    notifier put the incident's root message. A follow-up is claimed without one only when that root is dead.

    `claim` is this claim's token: every later write to the row is conditional on it (fencing), so once another
    worker has claimed the row after this lease ran out, nothing this worker does with it is recorded."""

    id: int
    claim: str
    notifier: str
    kind: NoticeKind
    attempts: int
    target: OwnerRef
    note: str | None
    incident: IncidentView
    root: Posted | None

    @property
    def subject(self) -> str:
        return f"incident #{self.incident.id}"


@dataclass(frozen=True)
class ClaimedDigest:
    """A review digest's notification this worker holds the lease on (fenced by `claim`, like `Claimed`)."""

    id: int
    claim: str
    notifier: str
    attempts: int
    target: OwnerRef
    digest: DigestView
    kind: NoticeKind = NoticeKind.digest

    @property
    def subject(self) -> str:
        return f"review digest #{self.digest.id}"


@dataclass(frozen=True)
class ClaimedGroup:
    """A refresh of a group's digest this worker holds the lease on (fenced by `claim`, like `Claimed`): `root` is
    the digest message to update, None when this refresh posts one."""

    id: int
    claim: str
    notifier: str
    attempts: int
    target: OwnerRef
    group: GroupView
    root: Posted | None
    kind: NoticeKind = NoticeKind.group

    @property
    def subject(self) -> str:
        return f"digest of group #{self.group.id}"


AnyClaimed = Claimed | ClaimedDigest | ClaimedGroup
# Which due notification is claimed first when the channel budget cannot take them all: pages (roots, and
# escalations, which page the next owner) before thread replies and updates, then groups' digests, then review
# digests; oldest first within each.
PRIORITY = {NoticeKind.root: 0, NoticeKind.escalation: 0, NoticeKind.update: 1, NoticeKind.repeat: 1,
            NoticeKind.group: 2, NoticeKind.digest: 3}


def utcnow() -> datetime:
    return datetime.now(UTC)


def view_of(row: Incident, decision: ContainmentDecision | None,
          steps: Sequence[ContainmentStep] = ()) -> IncidentView:
    return IncidentView(
        id=row.id, key=row.key, status=Status(row.status), rule=row.rule, severity=row.severity, title=row.title,
        agent_id=row.agent_id, workflow=row.workflow, target=row.target, frameworks=tuple(row.frameworks),
        evidence=dict(row.evidence), owners=FindingOwners.model_validate(row.owners), count=row.count,
        first_seen=row.first_seen, last_seen=row.last_seen, opened_at=row.opened_at,
        escalation_step=row.escalation_step, policy_sha256=row.policy_sha256, status_by=row.status_by,
        tags=tuple(row.tags), approval_level=row.approval_level, group_id=row.group_id, group_role=row.group_role,
        containment=tuple(StepView(s.playbook, s.step, s.action, s.status, s.gate, s.dry_run, s.detail.get("does"))
                          for s in steps),
        decision=None if decision is None else Decision(decision.decision, decision.owner_id, decision.slack_user,
                                                        decision.at),
    )


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE matched (execute() is typed as returning a plain Result; for DML it is a CursorResult)."""
    return cast(CursorResult[Any], result).rowcount


def _clean(text: str) -> str:
    """Detectors redact and truncate; anything on the topic is untrusted, so redact again and bound it loosely
    (loosely, so text a detector already truncated keeps its own marker)."""
    return redact_text(text, UNTRUSTED_MAX_CHARS)


def redact_detail(value: Any) -> Any:
    """A timeline detail with every string redacted (keys too), structure kept."""
    if isinstance(value, dict):
        return {_clean(str(k)): redact_detail(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_detail(v) for v in value]
    return _clean(value) if isinstance(value, str) else value


def _evidence(finding: Finding) -> dict[str, str]:
    return {_clean(k): _clean(v) for k, v in finding.evidence.items()}


class IncidentStore:
    """The incidents database, spoken to in the domain's terms. Every change is recorded as one outbox row for each
    of `notifiers` (the names this worker delivers to), so each notifier has its own root, retries and dead letters."""

    def __init__(self, engine: AsyncEngine, notifiers: Sequence[str]) -> None:
        if not notifiers:
            raise ValueError("an incident store needs at least one notifier to record notifications for")
        self.engine = engine
        self.sessions = session_factory(engine)
        self.dialect = engine.dialect.name
        self.notifiers = tuple(notifiers)
        # The sha256 of the policy live in this process, stamped on every timeline entry; None (a tool with no
        # policy loaded) stamps the policy the incident was opened under.
        self.live_policy: Callable[[], str] | None = None
        # The live matrix (sha256, matrix) whose `notifications` control pages; None: the built-in defaults.
        self.live_matrix: Callable[[], tuple[str, Matrix]] | None = None
        self._policies = PolicySource()
        # Each channel's send budget (messages per second, burst), shared through the database by every worker; None:
        # unlimited. The outbox asks each notifier what a notification would post where (`Budgeted.spend`).
        self.budget: Budget | None = None
        self.budget_wait_s: float | None = None  # after a claim: when the budget frees the next skipped row
        self.api_url: str | None = None  # the incident API's base URL, for the digests' links

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
                finding_id=finding.finding_id, rule=finding.rule, agent_id=_clean(finding.agent_id),
                event_id=_clean(finding.event_id), severity=finding.severity.value, shadow=finding.shadow,
                ts=finding.ts, evidence=_evidence(finding), recorded_at=now,
            )
            if finding.shadow:
                s.add(record)
                return Recorded.shadow
            target = _clean(finding.target)
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
                await self.log_entry(s, active.id, now, "superseded", detail={"by_incident": incident.id})
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
            title=_clean(finding.title), agent_id=record.agent_id,
            workflow=_clean(finding.workflow) if finding.workflow else None,
            target=target, frameworks=list(finding.frameworks),
            tags=[_clean(t) for t in finding.tags], evidence=record.evidence,
            owners=owners.model_dump(mode="json"), policy_sha256=finding.policy_sha256, count=1,
            first_seen=finding.ts, last_seen=finding.ts, opened_at=now, updated_at=now, escalation_step=0,
            escalate_at=None, tier=tier.value, review_pending_since=now if tier is Tier.review else None,
        )
        s.add(incident)
        await s.flush()
        await self.log_entry(s, incident.id, now, "opened", detail={
            "finding_id": finding.finding_id, "tier": tier.value, "responder": owners.responder.id,
            "approver": owners.approver.id if owners.approver else None,
            "escalation": [step.owner.id for step in owners.escalation], "policy_sha256": finding.policy_sha256,
        })
        if tier is Tier.page:
            await self._page(s, incident, finding, now, control)
        elif tier is Tier.review:
            await self.log_entry(s, incident.id, now, "kept_for_review", detail={
                "finding_id": finding.finding_id, "digest_to": owners.responder.id})
        else:
            await self.log_entry(s, incident.id, now, "logged", detail={"finding_id": finding.finding_id})
        return incident

    async def _page(self, s: AsyncSession, incident: Incident, finding: Finding, now: datetime,
                    control: list[str] | None = None) -> None:
        """Page the responder, for an incident opened as a page or raised to one: the finding's containment (always:
        a silence mutes people, not playbooks), then notification control decides who hears of it now."""
        incident.escalation_step = 0
        await self._propose(s, incident, finding, now)
        await self._announce(s, incident, now, control)

    async def _announce(self, s: AsyncSession, incident: Incident, now: datetime,
                        control: list[str] | None = None) -> None:
        """Inhibition, silences, grouping (responders/storms.py). A page that leads its group gets its escalation
        from now and its root message (plus the first step of the chain when that is someone else), due after the
        group wait; a member is carried by its group's digest and a muted page tells nobody: neither escalates."""
        verdict = await storms.decide(self, s, incident, now)
        if control is not None:
            control.append(verdict.kind)
        if verdict.kind != storms.LEADER:
            incident.escalate_at = None
            return
        owners = FindingOwners.model_validate(incident.owners)
        incident.escalate_at = escalation_deadline(owners.escalation, incident.escalation_step, now)
        await self.add_notifications(s, incident.id, NoticeKind.root, owners.responder, now=now, at=verdict.at)
        first = owners.escalation[0].owner if owners.escalation else None
        if first is not None and first.id != owners.responder.id:
            await self.add_notifications(s, incident.id, NoticeKind.escalation, first, now=now,
                                         note=escalation_note(owners, 0), at=verdict.at)

    async def _propose(self, s: AsyncSession, incident: Incident, finding: Finding, now: datetime) -> None:
        """Write the playbooks the finding triggers into the ledger, in the transaction that opens the incident: an
        `auto` step is approved at once, an `approver` one waits for the approval, which is due by the earliest
        approval timeout (then the next owner of the chain who approves is asked)."""
        credential = finding.credential
        waiting: list[float] = []
        for plan in finding.containment:
            approved = plan.gate is Gate.auto
            if not approved:
                waiting.append(plan.approval_timeout.total_seconds())
            for index, step in enumerate(plan.steps):
                s.add(ContainmentStep(
                    incident_id=incident.id, playbook=plan.playbook, step=index, action=step.action,
                    params=dict(step.params), gate=plan.gate.value, on_failure=plan.on_failure.value,
                    dry_run=plan.dry_run, approval_timeout_s=plan.approval_timeout.total_seconds(),
                    status=(StepStatus.approved if approved else StepStatus.proposed).value,
                    credential=None if credential is None else {"id": credential.id, "issuer": credential.issuer},
                    sealed_token=None if credential is None else credential.sealed_token,
                    decided_by=WARDEN if approved else None, attempts=0, next_attempt_at=now, detail={},
                    finding_ts=finding.ts, created_at=now, updated_at=now,
                ))
            await self.log_entry(s, incident.id, now, "containment_proposed", detail={
                "playbook": plan.playbook, "gate": plan.gate.value, "dry_run": plan.dry_run,
                "steps": [step.action for step in plan.steps],
            })
        if waiting:
            incident.approval_due_at = now + timedelta(seconds=min(waiting))

    async def _group(self, s: AsyncSession, incident: Incident, finding: Finding, record: FindingRecord, *,
                     now: datetime, control: list[str] | None = None) -> bool:
        """A repeat joins the incident. What it does next follows the incident's tier, which a higher finding
        raises (never lowers): a page repeat is announced in the root's thread, a review one waits for the digest,
        a log one is only counted. True when this finding raised the tier."""
        incident.count += 1
        incident.last_seen = max(incident.last_seen, finding.ts)
        incident.evidence = record.evidence
        incident.updated_at = now
        await self.log_entry(s, incident.id, now, "grouped", detail={
            "finding_id": finding.finding_id, "count": incident.count, "tier": finding.tier.on_event_path().value})
        higher = raised(Tier(incident.tier), finding.tier)
        if higher is not None:
            await self.log_entry(s, incident.id, now, "tier_raised", detail={
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
        if await storms.mute(self, s, incident, now) is not None:
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
        await self.add_notifications(s, incident.id, NoticeKind.repeat, responder, now=now,
                           only=[n for n in self.notifiers if n not in unsent])
        return False

    # -- helpers used inside a transaction ---------------------------------------------------------------------

    async def log_entry(self, s: AsyncSession, incident_id: int, now: datetime, kind: str, *, actor: str = WARDEN,
                        slack_user: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Append one entry to the incident's hash chain (the only way anything is written to the timeline).

        The incident row is locked first, so two workers appending to one incident take turns and each reads the
        other's entry as its predecessor; the unique (incident_id, seq) makes a fork impossible even so. String
        values are redacted again: nothing that reaches the trail may carry a secret."""
        # FOR NO KEY UPDATE: appenders take turns, yet a transaction that only inserted a row referencing the
        # incident (its FK takes KEY SHARE) never blocks us, so two deliveries of one incident cannot deadlock.
        policy = (await s.execute(
            select(Incident.policy_sha256).where(Incident.id == incident_id).with_for_update(key_share=True)
        )).scalar_one()
        live = self.live_policy() if self.live_policy is not None else None
        last = (await s.execute(
            select(TimelineEntry.seq, TimelineEntry.hash).where(TimelineEntry.incident_id == incident_id)
            .order_by(TimelineEntry.seq.desc()).limit(1)
        )).first()
        seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
        entry = TimelineEntry(incident_id=incident_id, at=now, kind=kind, actor=actor, slack_user=slack_user,
                              detail=redact_detail(detail or {}), policy_sha256=live or policy, seq=seq,
                              prev_hash=prev)
        entry.hash = entry_hash(str(incident_id), seq, prev, timeline_content(
            incident_id=incident_id, at=now, kind=kind, actor=actor, slack_user=slack_user,
            policy_sha256=entry.policy_sha256, detail=entry.detail))
        s.add(entry)
        await s.flush()  # the next entry of this transaction reads this one as its predecessor

    async def add_notifications(self, s: AsyncSession, incident_id: int, kind: NoticeKind, target: OwnerRef, *,
                                now: datetime, note: str | None = None, only: Iterable[str] | None = None,
                                effect_key: str | None = None, at: datetime | None = None) -> None:
        """One pending row per notifier (or per notifier in `only`), due at `at` (default now). A follow-up for a
        notifier that has no root for this incident (it was added to WARDEN_NOTIFIERS after the incident opened, or
        the incident is a member of a group's digest and now escalates) gets a root first: every follow-up waits for
        its own notifier's root, so it must have one to wait for. A muted incident (silenced, inhibited) tells
        nobody; a repeat or update of a digest member refreshes its group's digest instead of paging it."""
        names = list(self.notifiers if only is None else only)
        if not names:
            return
        tier, silenced, inhibited, role, group_id = (await s.execute(select(
            Incident.tier, Incident.silenced_by, Incident.inhibited_by, Incident.group_role, Incident.group_id,
        ).where(Incident.id == incident_id))).one()
        if tier != Tier.page.value:  # review and log incidents tell nobody directly: a lifecycle move is recorded
            return  # on the timeline only, and a review incident reaches its responder through the digest
        if silenced is not None or inhibited is not None:  # muted: the timeline says what happened, nobody hears
            return
        if kind is not NoticeKind.root:
            rooted = set((await s.execute(select(Notification.notifier).where(
                Notification.incident_id == incident_id, Notification.kind == NoticeKind.root.value,
            ))).scalars()) | set((await s.execute(select(IncidentMessage.notifier).where(
                IncidentMessage.incident_id == incident_id,
            ))).scalars())
            missing = [n for n in names if n not in rooted]
            if (role == storms.MEMBER and group_id is not None and not rooted
                    and kind in (NoticeKind.repeat, NoticeKind.update)):
                await storms.refresh_by_id(self, s, group_id, now)  # the digest shows its new count and status
                return
            if missing:
                # Two changes to one incident (a click and a repeat on two workers) must not both add a root: lock
                # the incident, then look again at what the other transaction may have committed meanwhile.
                owners = (await s.execute(
                    select(Incident.owners).where(Incident.id == incident_id).with_for_update()
                )).scalar_one()
                rooted |= set((await s.execute(select(Notification.notifier).where(
                    Notification.incident_id == incident_id, Notification.kind == NoticeKind.root.value,
                ))).scalars())
                missing = [n for n in missing if n not in rooted]
                responder = FindingOwners.model_validate(owners).responder
                for name in missing:
                    s.add(self._row(incident_id, name, NoticeKind.root, responder, now=now, note=None))
        for name in names:
            row = self._row(incident_id, name, kind, target, now=now, note=note)
            if at is not None:
                row.next_attempt_at = at
            if effect_key is not None:
                row.effect_key = f"{effect_key}/{name}"  # unique: a second try of one effect adds nothing
            s.add(row)

    @staticmethod
    def _row(incident_id: int, notifier: str, kind: NoticeKind, target: OwnerRef, *, now: datetime,
             note: str | None) -> Notification:
        return Notification(incident_id=incident_id, notifier=notifier, kind=kind.value,
                            target=target.model_dump(mode="json"), note=note, status=Pending.pending.value,
                            attempts=0, next_attempt_at=now, created_at=now)

    # -- the outbox --------------------------------------------------------------------------------------------

    async def claim_due(self, now: datetime, lease: timedelta, limit: int = 20,
                        spend: Callable[[AnyClaimed], Mapping[str, int]] | None = None) -> list[AnyClaimed]:
        """Take the lease on due notifications of this worker's notifiers, with a new claim token. A follow-up
        waits until its notifier's root message of the incident is out (or was dead-lettered). The lease only keeps
        the rows for this worker until it gets to them: each is leased again (`renew`) right before it is sent.

        With a channel budget (`self.budget`) and `spend` (what a notification would post, per channel), a row is
        claimed only if its channels have the messages left, pages first (`PRIORITY`); the tokens are taken in this
        transaction (`responders/budget.py`). `budget_wait_s` is then when the next skipped row may go."""
        message = IncidentMessage
        token = uuid.uuid4().hex
        budgeted = self.budget is not None and spend is not None
        fetch = limit * 5 if budgeted else limit
        due = ((Notification.status == Pending.pending.value) & Notification.notifier.in_(self.notifiers)
               & (Notification.next_attempt_at <= now)
               & ((Notification.claimed_until.is_(None)) | (Notification.claimed_until <= now)))
        rank = case((Notification.kind.in_([NoticeKind.root.value, NoticeKind.escalation.value]), 0),
                    (Notification.kind.in_([NoticeKind.update.value, NoticeKind.repeat.value]), 1), else_=2)
        async with self.sessions.begin() as s:
            rows = (await s.execute(
                select(Notification, Incident, message)
                .join(Incident, Incident.id == Notification.incident_id)
                .outerjoin(message, (message.incident_id == Notification.incident_id)
                           & (message.notifier == Notification.notifier))
                .where(due, (Notification.kind == NoticeKind.root.value) | message.ref.is_not(None)
                       | message.dead.is_(True))
                .order_by(rank, Notification.id)
                .limit(fetch)
                .with_for_update(of=[Notification, Incident], skip_locked=True)
            )).all()
            candidates: list[tuple[Notification, AnyClaimed]] = []
            decisions, steps = await self._containment_of(s, {incident.id for _, incident, _ in rows})
            for note, incident, root in rows:
                assert note.notifier is not None  # claimed by name above
                candidates.append((note, Claimed(
                    id=note.id, claim=token, notifier=note.notifier, kind=NoticeKind(note.kind),
                    attempts=note.attempts + 1, target=OwnerRef.model_validate(note.target), note=note.note,
                    incident=view_of(incident, decisions.get(incident.id), steps.get(incident.id, [])),
                    root=Posted(root.address or "", root.ref) if root is not None and root.ref else None,
                )))
            groups = (await s.execute(
                select(Notification, NotifyGroup).join(NotifyGroup, NotifyGroup.id == Notification.group_id)
                .where(due).order_by(Notification.id).limit(fetch)
                .with_for_update(of=[Notification, NotifyGroup], skip_locked=True)
            )).all()
            tops: dict[int, int] = {}
            for note, group in groups:
                assert note.notifier is not None  # claimed by name above
                shown, digest_message = await storms.peek(s, group, note.notifier, now, self.api_url)
                tops[note.id] = int(group.route.get("top", 5))
                candidates.append((note, ClaimedGroup(
                    id=note.id, claim=token, notifier=note.notifier, attempts=note.attempts + 1,
                    target=OwnerRef.model_validate(note.target), group=shown, root=digest_message)))
            digests = (await s.execute(
                select(Notification, ReviewDigest).join(ReviewDigest, ReviewDigest.id == Notification.digest_id)
                .where(due).order_by(Notification.id).limit(limit)
                .with_for_update(of=Notification, skip_locked=True)
            )).all()
            for note, digest in digests:
                assert note.notifier is not None  # claimed by name above
                responder = OwnerRef.model_validate(digest.target)
                candidates.append((note, ClaimedDigest(
                    id=note.id, claim=token, notifier=note.notifier, attempts=note.attempts + 1,
                    target=OwnerRef.model_validate(note.target),
                    digest=view_of_digest(digest.id, responder, digest.summary),
                )))
            candidates.sort(key=lambda nc: (PRIORITY[nc[1].kind], nc[0].id))
            if budgeted:
                assert spend is not None
                chosen = await self._within_budget(s, candidates, spend, now, limit)
            else:
                self.budget_wait_s = None
                chosen = [nc for nc in candidates if not isinstance(nc[1], ClaimedDigest)][:limit] + [
                    nc for nc in candidates if isinstance(nc[1], ClaimedDigest)][:limit]
            out: list[AnyClaimed] = []
            for note, picked in chosen:
                note.attempts += 1
                note.claimed_until = now + lease
                note.claim = token
                if isinstance(picked, ClaimedGroup):  # the counts only for a refresh that goes (six queries)
                    counted = await storms.complete(s, picked.group, picked.notifier, tops[picked.id])
                    out.append(replace(picked, group=counted))
                else:
                    out.append(picked)
            return out

    async def _within_budget(self, s: AsyncSession, candidates: list[tuple[Notification, AnyClaimed]],
                             spend: Callable[[AnyClaimed], Mapping[str, int]], now: datetime,
                             limit: int) -> list[tuple[Notification, AnyClaimed]]:
        """The candidates (in priority order) whose channels can take what they post; once one is skipped for want
        of budget, nothing after it goes to its channels in this claim (a later page still goes first)."""
        budget = self.budget
        assert budget is not None
        needs = [{(c.notifier, channel): n for channel, n in spend(c).items() if n > 0} for _, c in candidates]
        buckets = await lock_buckets(s, self.dialect, [ch for need in needs for ch in need], budget, now)
        starved: set[tuple[str, str]] = set()
        chosen: list[tuple[Notification, AnyClaimed]] = []
        wait: float | None = None
        for candidate, need in zip(candidates, needs, strict=True):
            if len(chosen) >= limit:
                break
            if starved & need.keys():
                continue
            ready_in = wait_for(buckets, need, budget, now)
            if ready_in > 0:
                metrics.NOTIFICATIONS_DEFERRED.labels(notifier=candidate[1].notifier).inc()
                starved |= need.keys()
                wait = ready_in if wait is None else min(wait, ready_in)
                continue
            for channel, n in need.items():
                buckets[channel].tokens -= n
            chosen.append(candidate)
        await save_buckets(s, buckets)
        self.budget_wait_s = wait
        return chosen

    async def rate_limited(self, notifier: str, channel: str, seconds: float, now: datetime) -> None:
        """A channel answered 429 with Retry-After: no worker sends to it for `seconds` (its budget row says so)."""
        if self.budget is None:
            return
        async with self.sessions.begin() as s:
            await block_channel(s, self.dialect, notifier, channel, seconds=seconds, budget=self.budget, now=now)

    @staticmethod
    def _held(claimed: AnyClaimed) -> ColumnElement[bool]:
        """The fence: the row is still pending and still claimed by `claimed`'s claim."""
        return ((Notification.id == claimed.id) & (Notification.claim == claimed.claim)
                & (Notification.status == Pending.pending.value))

    async def renew(self, claimed: AnyClaimed, until: datetime) -> bool:
        """Extend the lease to `until` if the claim is still held; False when another worker claimed the row since
        (or it is no longer pending): then this worker must not send it."""
        async with self.sessions.begin() as s:
            return rowcount(await s.execute(
                update(Notification).where(self._held(claimed)).values(claimed_until=until)
            )) == 1

    async def hold(self, waiting: Sequence[AnyClaimed], until: datetime) -> int:
        """Keep rows this worker claimed and has not started yet until `until` (never shorter than they are held):
        a batch longer than the queue lease would otherwise lose its tail to another worker, which then loses the
        tail of its own batch the same way. Fenced like `renew`; returns how many rows are still held."""
        if not waiting:
            return 0
        held = (Notification.id.in_([c.id for c in waiting]) & Notification.claim.in_({c.claim for c in waiting})
                & (Notification.status == Pending.pending.value) & (Notification.claimed_until < until))
        async with self.sessions.begin() as s:
            return rowcount(await s.execute(update(Notification).where(held).values(claimed_until=until)))

    async def give_back(self, claimed: AnyClaimed, reason: str) -> bool:
        """Release a claim still held without a verdict (its lease ended before the send could be made or
        finished): the row is due again at once, for any worker. False when the claim was lost already."""
        async with self.sessions.begin() as s:
            return rowcount(await s.execute(update(Notification).where(self._held(claimed)).values(
                claimed_until=None, claim=None, last_error=reason,
            ))) == 1

    async def mark_delivered(self, claimed: AnyClaimed, posted: Posted, now: datetime) -> bool:
        """Record the delivery if the claim is still held (else nothing, and False); a root also becomes the
        notifier's message of the incident, for follow-ups, unless one is stored already: a stored root is never
        replaced, so the reference follow-ups thread under stays the first one recorded."""
        async with self.sessions.begin() as s:
            if rowcount(await s.execute(update(Notification).where(self._held(claimed)).values(
                status=Pending.delivered.value, address=posted.address, ref=posted.ref,
                delivered_at=now, claimed_until=None, last_error=None,
            ))) != 1:
                return False
            detail: dict[str, Any] = {"kind": claimed.kind.value, "to": claimed.target.id, "via": claimed.notifier,
                                      "address": posted.address, "ref": posted.ref}
            if isinstance(claimed, ClaimedDigest):  # each incident it carried says it reached its responder
                for incident_id in claimed.digest.incidents:
                    await self.log_entry(s, incident_id, now, "notified",
                                         detail={**detail, "digest": claimed.digest.id})
                return True
            if isinstance(claimed, ClaimedGroup):  # each member it named says which digest message carried it
                await storms.recorded(self, s, group_id=claimed.group.id, notifier=claimed.notifier,
                                      epoch=claimed.group.epoch, lines=claimed.group.lines, posted=posted,
                                      target=claimed.target, now=now)
                return True
            if claimed.kind is NoticeKind.root:
                root = await self._message(s, claimed, now)
                if root.ref is None:
                    root.address, root.ref, root.dead = posted.address, posted.ref, False
                elif (root.address, root.ref) != (posted.address, posted.ref):
                    detail["duplicate_of"] = root.ref  # another root row of this incident was recorded first
            await self.log_entry(s, claimed.incident.id, now, "notified", detail=detail)
            return True

    @staticmethod
    async def _message(s: AsyncSession, claimed: Claimed, now: datetime) -> IncidentMessage:
        """The claimed notifier's root message row of the incident (locked), added (empty) if there is none yet."""
        query = select(IncidentMessage).where(
            IncidentMessage.incident_id == claimed.incident.id, IncidentMessage.notifier == claimed.notifier,
        ).with_for_update()
        row = (await s.execute(query)).scalar_one_or_none()
        if row is not None:
            return row
        try:
            async with s.begin_nested():  # another root row of the incident may be adding it at the same time
                row = IncidentMessage(incident_id=claimed.incident.id, notifier=claimed.notifier, dead=False, at=now)
                s.add(row)
            return row
        except IntegrityError:  # uq_incident_messages_notifier: it was; use theirs
            return (await s.execute(query)).scalar_one()

    async def retry_later(self, claimed: AnyClaimed, error: str, at: datetime) -> bool:
        """Schedule the next attempt if the claim is still held; False (nothing written) when it was lost."""
        async with self.sessions.begin() as s:
            return rowcount(await s.execute(update(Notification).where(self._held(claimed)).values(
                next_attempt_at=at, claimed_until=None, claim=None, last_error=error,
            ))) == 1

    async def defer(self, claimed: AnyClaimed, error: str, at: datetime) -> bool:
        """Due again at `at`, this attempt not counted (the channel asked to wait: a rate limit is not a failure, and
        must never dead-letter a notification); False (nothing written) when the claim was lost."""
        async with self.sessions.begin() as s:
            return rowcount(await s.execute(update(Notification).where(self._held(claimed)).values(
                next_attempt_at=at, claimed_until=None, claim=None, last_error=error,
                attempts=Notification.attempts - 1,
            ))) == 1

    async def dead_letter(self, claimed: AnyClaimed, error: str, now: datetime) -> bool:
        """Give up on one notification if the claim is still held (else nothing, and False); a dead root releases
        its notifier's follow-ups (to be dead-lettered too)."""
        async with self.sessions.begin() as s:
            if rowcount(await s.execute(update(Notification).where(self._held(claimed)).values(
                status=Pending.dead.value, claimed_until=None, last_error=error,
            ))) != 1:
                return False
            detail = {"kind": claimed.kind.value, "to": claimed.target.id, "via": claimed.notifier,
                      "attempts": claimed.attempts, "error": error}
            if isinstance(claimed, ClaimedDigest):  # each incident it carried says its responder was not told
                for incident_id in claimed.digest.incidents:
                    await self.log_entry(s, incident_id, now, "notification_dead_lettered",
                                         detail={**detail, "digest": claimed.digest.id})
                return True
            if isinstance(claimed, ClaimedGroup):  # each member it was to name says it was not (the next may)
                for line in sorted(claimed.group.lines, key=lambda ln: ln.id):
                    await self.log_entry(s, line.id, now, "notification_dead_lettered",
                                         detail={**detail, "group": claimed.group.id})
                return True
            if claimed.kind is NoticeKind.root:
                root = await self._message(s, claimed, now)
                if root.ref is None:
                    root.dead = True
            await self.log_entry(s, claimed.incident.id, now, "notification_dead_lettered", detail=detail)
            return True

    async def adopt_unassigned(self, now: datetime) -> int:
        """Give this worker's notifiers the rows a version before 0002 left pending before any notifier had them
        (the migration assigns the rest to the notifier of their incident's root). Returns how many were adopted."""
        async with self.sessions.begin() as s:
            rows = list((await s.execute(select(Notification).where(
                Notification.status == Pending.pending.value, Notification.notifier.is_(None),
                Notification.incident_id.is_not(None),  # digests came after 0002: they always name a notifier
            ).order_by(Notification.id).with_for_update(skip_locked=True))).scalars())
            for row in rows:
                assert row.incident_id is not None  # selected so
                await self.add_notifications(s, row.incident_id, NoticeKind(row.kind),
                                             OwnerRef.model_validate(row.target), now=now, note=row.note)
                await s.delete(row)
            return len(rows)

    async def release_claims(self) -> int:
        """Forget every lease: only safe when no other worker shares the database (the SQLite default)."""
        async with self.sessions.begin() as s:
            result = await s.execute(update(Notification).where(
                Notification.status == Pending.pending.value, Notification.claimed_until.is_not(None),
            ).values(claimed_until=None, claim=None))
            return rowcount(result)

    # -- escalation --------------------------------------------------------------------------------------------

    async def due_escalations(self, now: datetime) -> list[int]:
        async with self.sessions.begin() as s:
            return list((await s.execute(
                select(Incident.id).where(Incident.status == Status.open.value, Incident.escalate_at <= now)
                .order_by(Incident.escalate_at)
            )).scalars())

    async def escalate(self, incident_id: int, now: datetime) -> int | None:
        """Move an unacknowledged incident to the next step of its frozen chain; the new step, or None."""
        async with self.sessions.begin() as s:
            incident = (await s.execute(
                select(Incident).where(Incident.id == incident_id).with_for_update()
            )).scalar_one()
            if incident.status != Status.open.value or incident.escalate_at is None or incident.escalate_at > now:
                return None  # acknowledged, closed or escalated by another worker meanwhile
            owners = FindingOwners.model_validate(incident.owners)
            step = incident.escalation_step + 1
            incident.escalate_at = escalation_deadline(owners.escalation, step, now)
            incident.updated_at = now
            if step >= len(owners.escalation):
                await self.log_entry(s, incident.id, now, "escalation_exhausted",
                          detail={"steps": len(owners.escalation)})
                return None
            incident.escalation_step = step
            target = owners.escalation[step].owner
            note = escalation_note(owners, step)
            await self.log_entry(s, incident.id, now, "escalated", detail={"step": step, "to": target.id, "why": note})
            await self.add_notifications(s, incident.id, NoticeKind.escalation, target, now=now, note=note)
            return step

    # -- people acting on an incident --------------------------------------------------------------------------

    async def incident(self, incident_id: int) -> IncidentView | None:
        async with self.sessions.begin() as s:
            row = await s.get(Incident, incident_id)
            return None if row is None else view_of(row, await self.decision_of(s, incident_id),
                                                 await self.steps_of(s, incident_id))

    async def transition(self, incident_id: int, expected: Status, target: Status, *, owner: OwnerRef,
                         slack_user: str, note: str, now: datetime) -> bool:
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
            await self.log_entry(s, incident_id, now, target.value, actor=owner.id, slack_user=slack_user,
                      detail={"from": expected.value})
            owners = FindingOwners.model_validate(
                (await s.execute(select(Incident.owners).where(Incident.id == incident_id))).scalar_one()
            )
            await self.add_notifications(s, incident_id, NoticeKind.update, owners.responder, now=now, note=note)
            return True

    async def decide(self, incident_id: int, decision: str, *, owner: OwnerRef, slack_user: str, note: str,
                     now: datetime) -> bool:
        """Record the approver's containment decision (once per incident) for the playbooks to act on."""
        try:
            async with self.sessions.begin() as s:
                row = await s.get(Incident, incident_id)
                if row is None or Status(row.status) not in ACTIVE:
                    return False
                if not any(st.status == StepStatus.proposed.value for st in await self.steps_of(s, incident_id)):
                    return False  # no playbook waits for an approval: there is nothing to decide
                s.add(ContainmentDecision(incident_id=incident_id, decision=decision, owner_id=owner.id,
                                          slack_user=slack_user, at=now))
                await s.flush()
                await self.log_entry(s, incident_id, now, f"containment_{decision}", actor=owner.id,
                                     slack_user=slack_user)
                responder = FindingOwners.model_validate(row.owners).responder
                await self.add_notifications(s, incident_id, NoticeKind.update, responder, now=now, note=note)
                return True
        except IntegrityError:  # uq_decisions_incident: the approver (or a replay) decided already
            return False

    async def request_release(self, incident_id: int, *, owner: OwnerRef, via: str, identity: str,
                              now: datetime) -> bool:
        """Record a release of the incident's quarantine in the ledger, for the engine to publish; False when no
        quarantine is in effect or a release is already recorded. Whether `owner` may release is checked by the
        caller (`authorise`) and again by the engine when it runs."""
        async with self.sessions.begin() as s:
            row = (await s.execute(select(Incident).where(Incident.id == incident_id).with_for_update())
                   ).scalar_one_or_none()
            if row is None:
                return False
            steps = await self.steps_of(s, incident_id)
            done = [st for st in steps if st.status == StepStatus.done.value]
            if not any(st.action == "quarantine_agent" for st in done) or any(st.action == RELEASE for st in steps):
                return False
            s.add(ContainmentStep(
                incident_id=incident_id, playbook=RELEASE, step=0, action=RELEASE, params={}, gate="approver",
                on_failure="escalate", dry_run=False, approval_timeout_s=0.0, status=StepStatus.approved.value,
                decided_by=owner.id, attempts=0, next_attempt_at=now, detail={"via": via, "identity": identity},
                finding_ts=now, created_at=now, updated_at=now,
            ))
            await self.log_entry(s, incident_id, now, "release_requested", actor=owner.id,
                           slack_user=identity if via == "slack" else None, detail={"via": via, "identity": identity})
            responder = FindingOwners.model_validate(row.owners).responder
            await self.add_notifications(s, incident_id, NoticeKind.update, responder, now=now,
                                         note=f"Quarantine release requested by {owner.name or owner.id} ({via}).")
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

    async def note_silence(self, incident_id: int, silence_id: int, matchers: Sequence[str], *, owner: OwnerRef,
                           slack_user: str, now: datetime) -> None:
        """The incident's timeline says a silence was made from it, by whom."""
        async with self.sessions.begin() as s:
            await self.log_entry(s, incident_id, now, "silence_added", actor=owner.id, slack_user=slack_user,
                                 detail={"silence": silence_id, "matchers": list(matchers)})

    async def record_refusal(self, incident_id: int, action: str, slack_user: str, reason: str,
                             now: datetime) -> None:
        async with self.sessions.begin() as s:
            await self.log_entry(s, incident_id, now, "refused", actor="unauthorised", slack_user=slack_user,
                      detail={"action": action, "reason": reason})

    async def record_security_event(self, source: str, kind: str, now: datetime, detail: dict[str, Any]) -> None:
        """A refused request (forged, stale, replayed, malformed), for the audit trail; the caller leaves out the
        body."""
        async with self.sessions.begin() as s:
            if self.dialect == "postgresql":  # one chain: appenders take turns (SQLite writers already do)
                await s.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _SECURITY_CHAIN_LOCK})
            last = (await s.execute(
                select(SecurityEvent.seq, SecurityEvent.hash).order_by(SecurityEvent.seq.desc()).limit(1)
            )).first()
            seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
            clean = redact_detail(detail)
            s.add(SecurityEvent(at=now, source=source, kind=kind, detail=clean, seq=seq, prev_hash=prev,
                                hash=entry_hash(SECURITY_CHAIN, seq, prev, security_content(
                                    at=now, source=source, kind=kind, detail=clean))))

    async def first_sighting(self, signature: str, now: datetime, keep: timedelta) -> bool:
        """True the first time a signed Slack request is seen; False for a replay within `keep`."""
        try:
            async with self.sessions.begin() as s:
                await s.execute(delete(SeenInteraction).where(SeenInteraction.seen_at < now - keep))
                s.add(SeenInteraction(signature=signature, seen_at=now))
        except IntegrityError:
            return False
        return True

    @staticmethod
    async def decision_of(s: AsyncSession, incident_id: int) -> ContainmentDecision | None:
        return (await s.execute(
            select(ContainmentDecision).where(ContainmentDecision.incident_id == incident_id)
        )).scalar_one_or_none()

    @staticmethod
    async def _containment_of(s: AsyncSession, incident_ids: set[int]) -> tuple[
            dict[int, ContainmentDecision], dict[int, list[ContainmentStep]]]:
        """The decisions and ledgers of several incidents in two queries (a claim takes up to 20 rows: two queries
        per row were most of its statements)."""
        if not incident_ids:
            return {}, {}
        decisions = {d.incident_id: d for d in (await s.execute(
            select(ContainmentDecision).where(ContainmentDecision.incident_id.in_(incident_ids))
        )).scalars()}
        steps: dict[int, list[ContainmentStep]] = {}
        for step in (await s.execute(
            select(ContainmentStep).where(ContainmentStep.incident_id.in_(incident_ids)).order_by(ContainmentStep.id)
        )).scalars():
            steps.setdefault(step.incident_id, []).append(step)
        return decisions, steps

    @staticmethod
    async def steps_of(s: AsyncSession, incident_id: int) -> list[ContainmentStep]:
        """The incident's containment ledger, in playbook and step order."""
        return list((await s.execute(
            select(ContainmentStep).where(ContainmentStep.incident_id == incident_id).order_by(ContainmentStep.id)
        )).scalars())

    # -- reading -----------------------------------------------------------------------------------------------

    async def timeline(self, incident_id: int) -> list[TimelineEntry]:
        async with self.sessions.begin() as s:
            return list((await s.execute(
                select(TimelineEntry).where(TimelineEntry.incident_id == incident_id).order_by(TimelineEntry.id)
            )).scalars())

    async def step_counts(self, since: datetime) -> dict[str, int]:
        """Containment steps created since `since`, by status."""
        async with self.sessions.begin() as s:
            rows = (await s.execute(select(ContainmentStep.status, func.count()).where(
                ContainmentStep.created_at >= since).group_by(ContainmentStep.status))).all()
            return {status: int(n) for status, n in rows}

    async def contained_incidents(self, since: datetime) -> list[int]:
        """Incidents with a containment step done since `since`."""
        async with self.sessions.begin() as s:
            return list((await s.execute(select(ContainmentStep.incident_id).where(
                ContainmentStep.created_at >= since, ContainmentStep.status == StepStatus.done.value,
            ).distinct().order_by(ContainmentStep.incident_id))).scalars())

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
