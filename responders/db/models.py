"""The state of record for incidents (SQLAlchemy 2 models): incidents, findings, timeline, outbox, messages,
decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from warden.contract.actors import Actor


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every backend, read back as aware UTC, so comparisons never mix the two."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Warden stores aware UTC only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Incident(Base):
    """One incident: a group of findings with one key, its frozen owners, lifecycle and escalation position."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    # Equal to `key` while repeats may still join this incident; NULL once closed or superseded. Unique, so two
    # workers can never open two active incidents for one key.
    open_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    status_by: Mapped[str | None] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    agent_id: Mapped[str] = mapped_column(Text)
    workflow: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    frameworks: Mapped[list[Any]]
    tags: Mapped[list[Any]]
    evidence: Mapped[dict[str, Any]]
    owners: Mapped[dict[str, Any]] = mapped_column(JSON, comment="FindingOwners frozen when the incident opened")
    policy_sha256: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    escalation_step: Mapped[int] = mapped_column(Integer, default=0)
    escalate_at: Mapped[datetime | None] = mapped_column(index=True)
    # How far a containment approval has climbed the chain: 0 is the named approver, n the n-th escalation step
    # that `approves`; and when it climbs next if still undecided (NULL: nothing waits for an approval).
    approval_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    approval_due_at: Mapped[datetime | None] = mapped_column(index=True)
    # The response tier (page, review, log): the highest of its findings' tiers; only a page notifies at once.
    tier: Mapped[str] = mapped_column(String(10), index=True, server_default="page")
    # Set while a review finding of this incident waits for its responder's next review digest (from when).
    review_pending_since: Mapped[datetime | None] = mapped_column(index=True)
    # Notification control (issue 32): the group (digest) a page belongs to, as its leader (it paged) or a member
    # (carried by the group's digest: `member`); or the silence or the open incident that muted it (recorded only).
    group_id: Mapped[int | None] = mapped_column(Integer, index=True)
    group_role: Mapped[str | None] = mapped_column(String(8))
    silenced_by: Mapped[int | None] = mapped_column(Integer)
    inhibited_by: Mapped[int | None] = mapped_column(Integer)


class IncidentMessage(Base):
    """Where one notifier put an incident's root message, so follow-ups thread under it and it is never posted
    twice; or that its root was dead-lettered, so follow-ups for that notifier stop waiting."""

    __tablename__ = "incident_messages"
    __table_args__ = (UniqueConstraint("incident_id", "notifier", name="uq_incident_messages_notifier"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    notifier: Mapped[str] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(200), comment="The notifier's channel or address")
    ref: Mapped[str | None] = mapped_column(String(200), comment="The notifier's id of the message (Slack's ts)")
    dead: Mapped[bool] = mapped_column(Boolean, comment="The root was dead-lettered: nothing to thread under")
    at: Mapped[datetime]


class FindingRecord(Base):
    """Every finding handled, by id: the idempotency ledger and the evidence of each repeat."""

    __tablename__ = "incident_findings"

    finding_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    rule: Mapped[str] = mapped_column(String(200))
    agent_id: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    shadow: Mapped[bool] = mapped_column(Boolean)
    ts: Mapped[datetime]
    evidence: Mapped[dict[str, Any]]
    recorded_at: Mapped[datetime]


class TimelineEntry(Base):
    """Who did what to an incident, and when: the audit trail (actor is an owner id or `warden`). Append-only and
    hash-chained per incident (`responders/audit.py`); nothing in the code updates or deletes a row."""

    __tablename__ = "timeline"
    # One entry per position of an incident's chain: two workers appending at once can never fork it.
    __table_args__ = (UniqueConstraint("incident_id", "seq", name="uq_timeline_incident_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    # Who acted, as the channel that carried it knows them (all NULL for Warden's own entries): warden.contract.actors
    notifier: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(200))
    user_id: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]]
    policy_sha256: Mapped[str | None] = mapped_column(String(64), comment="The policy live when it was written")
    seq: Mapped[int] = mapped_column(Integer, comment="Position in the incident's chain, from 1")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    @property
    def via(self) -> Actor | None:
        """Who acted, when a person did."""
        return None if self.notifier is None or self.user_id is None else \
            Actor(self.notifier, self.user_id, self.address or "")

    @property
    def identity(self) -> str | None:
        """The actor's one-string form (as the trail shows and hashes it)."""
        return None if self.via is None else self.via.identity


class Notification(Base):
    """The outbox: one row per notifier, recorded as pending with the change that caused it, delivered later with
    where the message landed."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("effect_key", name="uq_notifications_effect_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # What it is about: an incident, or (kind `digest`) a review digest.
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("review_digests.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    target: Mapped[dict[str, Any]] = mapped_column(JSON, comment="OwnerRef of whom this is for")
    note: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    # Fencing: the token of the claim that holds the row (a new one per claim). Every later write to the row names
    # it, so a worker whose claim was taken over by another writes nothing.
    claim: Mapped[str | None] = mapped_column(String(32), comment="Token of the claim holding the lease")
    last_error: Mapped[str | None] = mapped_column(Text)
    # Who delivers this row. NULL only on rows left pending by a version before 0002; a worker adopts them at start.
    notifier: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(200))
    ref: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    # Set by a containment step that notifies: its step key, so a step run twice records one notification.
    effect_key: Mapped[str | None] = mapped_column(String(200))
    # Kind `group`: the group whose digest this refreshes (no incident_id).
    group_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # Kinds `approval` and `approval_closed`: the approval request it asks (at `approval_level` of its chain) or
    # whose messages it closes (no incident_id).
    approval_id: Mapped[str | None] = mapped_column(String(128), index=True)
    approval_level: Mapped[int | None] = mapped_column(Integer)


class NotifyGroup(Base):
    """A group of pages with one group key (issue 32): its first page (the leader) paged; the pages that follow within
    the group interval are its members, carried by one digest message per notifier, updated in place. `open_key` is
    the key while pages may still join (unique: two workers never open two groups for one key). `target` is the
    responder's OwnerRef, `labels` the group_by values, `route` the grouping as configured when it opened, `severity`
    its highest page's, `leader_id` the incident that paged for it last, `last_at` its last page or member."""

    __tablename__ = "notify_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    open_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    responder: Mapped[str] = mapped_column(String(200))
    target: Mapped[dict[str, Any]]
    labels: Mapped[dict[str, Any]]
    route: Mapped[dict[str, Any]]
    severity: Mapped[str] = mapped_column(String(16))
    leader_id: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime]
    last_at: Mapped[datetime]
    members: Mapped[int] = mapped_column(Integer)
    leaders: Mapped[int] = mapped_column(Integer)


class GroupMessage(Base):
    """One digest message of a group and notifier. `epoch` counts the group's announcements: a message older than
    the repeat interval is left alone and the next refresh posts epoch + 1."""

    __tablename__ = "group_messages"
    __table_args__ = (UniqueConstraint("group_id", "notifier", "epoch", name="uq_group_messages_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("notify_groups.id"), index=True)
    notifier: Mapped[str] = mapped_column(String(20))
    epoch: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(200))
    ref: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]


class DigestLine(Base):
    """A member incident named in its group's digest (a thread reply) by one notifier: which message carried it."""

    __tablename__ = "digest_lines"
    __table_args__ = (UniqueConstraint("incident_id", "notifier", name="uq_digest_lines_notifier"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    group_id: Mapped[int] = mapped_column(ForeignKey("notify_groups.id"), index=True)
    notifier: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(200))
    ref: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]


class Silence(Base):
    """A time-boxed mute (Alertmanager's silence): pages whose labels match every matcher (`matchers`, their texts)
    between `starts_at` and `ends_at` are recorded and not paged. Created with a required comment and author (who
    it is for); `created_by` is the identity that made it; expiring sets `ends_at` and `expired_by`."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    matchers: Mapped[list[Any]]
    starts_at: Mapped[datetime] = mapped_column(index=True)
    ends_at: Mapped[datetime] = mapped_column(index=True)
    comment: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    expired_by: Mapped[str | None] = mapped_column(String(200))


class SilenceEntry(Base):
    """A silence's audit trail: created, expired. Append-only and hash-chained per silence (chain `silence:<id>`),
    verified by `warden audit verify`."""

    __tablename__ = "silence_timeline"
    __table_args__ = (UniqueConstraint("silence_id", "seq", name="uq_silence_timeline_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    silence_id: Mapped[int] = mapped_column(ForeignKey("silences.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    identity: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]]
    seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChannelBudget(Base):
    """The send budget of one notifier's channel, shared by every worker (a token bucket): `tokens` as of `at`,
    refilled at the configured rate; no send before `blocked_until` (the channel's last Retry-After)."""

    __tablename__ = "channel_budgets"

    notifier: Mapped[str] = mapped_column(String(20), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime]
    blocked_until: Mapped[datetime | None]


class ReviewDigest(Base):
    """One periodic review digest to a responder: the review incidents it carries and what it says, frozen when it
    is made. One per responder and period (unique), so two workers never make the same digest twice; each notifier
    delivers it through the outbox (`notifications.digest_id`)."""

    __tablename__ = "review_digests"
    __table_args__ = (UniqueConstraint("responder", "period_end", name="uq_review_digests_period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    responder: Mapped[str] = mapped_column(String(200), comment="The responder's owner id")
    period_end: Mapped[datetime] = mapped_column(comment="The digest boundary it closes")
    target: Mapped[dict[str, Any]] = mapped_column(JSON, comment="OwnerRef of the responder, with contacts")
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, comment="Counts, top agents and targets, incident ids")
    created_at: Mapped[datetime]


class ContainmentDecision(Base):
    """The approver's approve/deny for an incident's containment; the playbooks consume these rows."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("incident_id", name="uq_decisions_incident"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    decision: Mapped[str] = mapped_column(String(10), comment="approve or deny")
    owner_id: Mapped[str] = mapped_column(String(200))
    # Who decided, as the channel that carried it knows them: warden.contract.actors
    notifier: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    consumed_at: Mapped[datetime | None] = mapped_column(comment="Set by the playbook that acted on it")

    @property
    def via(self) -> Actor:
        return Actor(self.notifier, self.user_id, self.address)

    @property
    def identity(self) -> str:
        """The actor's one-string form (as the trail shows it)."""
        return self.via.identity


class ContainmentStep(Base):
    """The containment ledger: one row per incident, playbook and step, moved `proposed → approved → executing →
    done | failed` (or `denied`, `cancelled`, `dry_run`). Each move is committed before the effect that follows."""

    __tablename__ = "containment_steps"
    __table_args__ = (UniqueConstraint("incident_id", "playbook", "step", name="uq_containment_steps_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    playbook: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(Integer, comment="Position in the playbook, from 0")
    action: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]]
    gate: Mapped[str] = mapped_column(String(20), comment="auto or approver, as resolved for the finding")
    on_failure: Mapped[str] = mapped_column(String(20))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    approval_timeout_s: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20), index=True)
    credential: Mapped[dict[str, Any] | None] = mapped_column(JSON, comment="Credential id and issuer (not secret)")
    sealed_token: Mapped[str | None] = mapped_column(Text, comment="Fernet-sealed; deleted once the step ends")
    decided_by: Mapped[str | None] = mapped_column(String(200), comment="Owner id whose approval let it run")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    claim: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, comment="What the action reported (never a secret)")
    finding_ts: Mapped[datetime] = mapped_column(comment="When the event that triggered it happened")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class SeenInteraction(Base):
    """Signatures of Slack requests already accepted, so a replayed request is refused."""

    __tablename__ = "seen_interactions"

    signature: Mapped[str] = mapped_column(String(100), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(index=True)


class SecurityEvent(Base):
    """Requests refused as forged, stale, replayed or malformed: what an auditor asks about, never their body."""

    __tablename__ = "security_events"
    __table_args__ = (UniqueConstraint("seq", name="uq_security_events_seq"),)  # one chain: never forked

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(40), comment="What received it: slack_interaction, ...")
    kind: Mapped[str] = mapped_column(String(40), comment="forged, stale, replayed, malformed")
    detail: Mapped[dict[str, Any]]
    seq: Mapped[int] = mapped_column(Integer, comment="Position in the security chain, from 1")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditExport(Base):
    """How far the optional `warden.audit` export has published the timeline (one row): the export resumes after it,
    and a worker holds it locked while publishing, so two workers never export the same entries at once."""

    __tablename__ = "audit_export"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_timeline_id: Mapped[int] = mapped_column(Integer, comment="Highest timeline id published")
    updated_at: Mapped[datetime]


class ApprovalRecord(Base):
    """One gateway's approval request (issue 17): the verdict, who must decide, where it stands, and how far its
    answer has been published. Its timeline is `approval_timeline`."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the request id
    correlation_id: Mapped[str | None] = mapped_column(String(256))
    gateway: Mapped[str] = mapped_column(String(200))  # kafka, or the gateway a token names
    agent_id: Mapped[str] = mapped_column(String(256), index=True)
    workflow: Mapped[str | None] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    rule: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]]
    action: Mapped[dict[str, Any]]  # the requested action, redacted
    target: Mapped[str] = mapped_column(String(256))
    approval_from: Mapped[str | None] = mapped_column(String(40))
    approver: Mapped[str | None] = mapped_column(String(200))
    chain: Mapped[list[Any]]  # the owners who may decide, in escalation order (frozen)
    level: Mapped[int] = mapped_column(Integer, default=0)  # how far up the chain the request is
    notified_level: Mapped[int] = mapped_column(Integer, default=-1)  # highest level whose message was posted
    timeout_s: Mapped[float] = mapped_column(Float)
    requested_at: Mapped[datetime]
    escalate_at: Mapped[datetime | None] = mapped_column(index=True)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    published: Mapped[str | None] = mapped_column(String(20))  # the last status published as an answer
    used_by: Mapped[str | None] = mapped_column(String(256))  # the change event an approval covered
    policy_sha256: Mapped[str] = mapped_column(String(64))

class ApprovalEntry(Base):
    """The approval record's timeline: request, verdict, routing, escalation, decision, refusals, expiry. Append-
    only and hash-chained per request (chain `approval:<id>`), verified by `warden audit verify`."""

    __tablename__ = "approval_timeline"
    __table_args__ = (UniqueConstraint("approval_id", "seq", name="uq_approval_timeline_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(ForeignKey("approvals.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    identity: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]]
    policy_sha256: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
