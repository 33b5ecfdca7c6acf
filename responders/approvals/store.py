"""The approval records and their hash-chained timelines: every change is a compare-and-set plus a timeline entry
in one transaction, so two workers (or a click racing an expiry) never both decide one request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders.audit import GENESIS, approval_chain, approval_content, entry_hash
from responders.db import session_factory
from responders.db.models import ApprovalEntry, ApprovalRecord
from responders.store.common import WARDEN, redact_detail, rowcount
from responders.trail import approval_link
from warden.contract.approval_requests import ApprovalStatus
from warden.contract.findings import OwnerRef

InTransaction = Callable[[AsyncSession], Awaitable[object]]
DECIDED = (ApprovalStatus.approved.value, ApprovalStatus.denied.value, ApprovalStatus.expired.value)


@dataclass(frozen=True)
class Entry:
    """A timeline entry to append: kind, who, their notifier identity, and what it says."""

    kind: str
    detail: dict[str, Any]
    actor: str = WARDEN
    identity: str | None = None


class ApprovalStore:
    """Reads and writes `approvals` and `approval_timeline`; the timeline is only ever appended to."""

    def __init__(self, engine: AsyncEngine, live_policy: Callable[[], str] | None = None) -> None:
        self.sessions = session_factory(engine)
        self.dialect = engine.dialect.name
        self.live_policy = live_policy

    async def create(self, record: ApprovalRecord, entries: list[Entry], now: datetime) -> tuple[ApprovalRecord,
                                                                                                   bool]:
        """Insert the record with its first entries; an id seen before returns the existing record (a gateway's
        retried or redelivered request is answered, never recorded twice)."""
        try:
            async with self.sessions.begin() as s:
                s.add(record)
                await s.flush()
                for entry in entries:
                    await self._append(s, record.id, now, entry, record.policy_sha256)
        except IntegrityError:
            existing = await self.get(record.id)
            if existing is None:
                raise
            return existing, False
        return record, True

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        async with self.sessions.begin() as s:
            return await s.get(ApprovalRecord, approval_id)

    async def log(self, approval_id: str, now: datetime, entry: Entry) -> None:
        async with self.sessions.begin() as s:
            await self._append(s, approval_id, now, entry)

    async def transition(self, approval_id: str, *, level: int, now: datetime, entry: Entry,
                         values: dict[str, Any]) -> bool:
        """Set `values` if the request is still pending at `level`, and log `entry`; False when it moved on."""
        async with self.sessions.begin() as s:
            done = rowcount(await s.execute(update(ApprovalRecord).where(
                ApprovalRecord.id == approval_id, ApprovalRecord.status == ApprovalStatus.pending.value,
                ApprovalRecord.level == level).values(**values)))
            if done:
                await self._append(s, approval_id, now, entry)
            return bool(done)

    async def due(self, now: datetime, limit: int = 100) -> list[ApprovalRecord]:
        """Pending requests whose current approver's time is up."""
        async with self.sessions.begin() as s:
            return list((await s.execute(select(ApprovalRecord).where(
                ApprovalRecord.status == ApprovalStatus.pending.value, ApprovalRecord.escalate_at <= now)
                .order_by(ApprovalRecord.escalate_at).limit(limit))).scalars())

    async def unrouted(self, limit: int = 100) -> list[ApprovalRecord]:
        """Pending requests whose current approver has not been sent the message yet."""
        async with self.sessions.begin() as s:
            return list((await s.execute(select(ApprovalRecord).where(
                ApprovalRecord.status == ApprovalStatus.pending.value,
                ApprovalRecord.notified_level < ApprovalRecord.level).limit(limit))).scalars())

    async def routed(self, approval_id: str, level: int, now: datetime, entry: Entry,
                     also: InTransaction | None = None) -> bool:
        """The ask for `level` is recorded once, with whom it goes to; `also` runs in the same transaction (the
        outbox rows that deliver it), so the ask and its messages are committed together or not at all."""
        async with self.sessions.begin() as s:
            done = rowcount(await s.execute(update(ApprovalRecord).where(
                ApprovalRecord.id == approval_id, ApprovalRecord.notified_level < level)
                .values(notified_level=level)))
            if done:
                await self._append(s, approval_id, now, entry)
                if also is not None:
                    await also(s)
            return bool(done)

    async def unpublished(self, limit: int = 100) -> list[ApprovalRecord]:
        """Records whose latest status has not been published as an answer yet."""
        async with self.sessions.begin() as s:
            return list((await s.execute(select(ApprovalRecord).where(or_(
                ApprovalRecord.published.is_(None), ApprovalRecord.published != ApprovalRecord.status))
                .limit(limit))).scalars())

    async def published(self, approval_id: str, status: str, also: InTransaction | None = None) -> None:
        """`status` was published; `also` runs in the same transaction (the outbox rows closing its messages)."""
        async with self.sessions.begin() as s:
            await s.execute(update(ApprovalRecord).where(ApprovalRecord.id == approval_id)
                            .values(published=status))
            if also is not None:
                await also(s)

    async def watched_agents(self, since: datetime) -> set[str]:
        """Agents with a decided approval request since `since`: the changes worth matching to a record."""
        async with self.sessions.begin() as s:
            return set((await s.execute(select(ApprovalRecord.agent_id).distinct().where(
                ApprovalRecord.verdict == "approval_required", ApprovalRecord.decided_at >= since,
                ApprovalRecord.status.in_(list(DECIDED))))).scalars())

    async def match_action(self, agent_id: str, target: str, event_id: str, *, at: datetime, now: datetime,
                           detail: dict[str, Any]) -> tuple[str, str] | None:
        """Put a change the agent made on the record it belongs to: the oldest approved, unused request for that
        target decided before it (which it now uses), else the latest decided one (a second use, or a change
        after a denial or expiry). (record id, entry kind), or None when no record concerns it or it was put
        there already."""
        async with self.sessions.begin() as s:
            rows = list((await s.execute(select(ApprovalRecord).where(
                ApprovalRecord.agent_id == agent_id, ApprovalRecord.target == target,
                ApprovalRecord.verdict == "approval_required", ApprovalRecord.status.in_(list(DECIDED)),
                ApprovalRecord.decided_at <= at).order_by(ApprovalRecord.decided_at))).scalars())
            if not rows or any(r.used_by == event_id for r in rows):
                return None
            unused = next((r for r in rows if r.status == ApprovalStatus.approved.value and r.used_by is None), None)
            if unused is not None:
                done = rowcount(await s.execute(update(ApprovalRecord).where(
                    ApprovalRecord.id == unused.id, ApprovalRecord.used_by.is_(None)).values(used_by=event_id)))
                if done:
                    await self._append(s, unused.id, now, Entry("action", {**detail, "covered": True}))
                    return unused.id, "action"
            latest = rows[-1]
            why = (f"approval already used by {latest.used_by}" if latest.status == ApprovalStatus.approved.value
                   else f"the request was {latest.status}")
            await self._append(s, latest.id, now, Entry("action_without_approval", {**detail, "reason": why}))
            return latest.id, "action_without_approval"

    async def timeline(self, approval_id: str) -> list[ApprovalEntry]:
        async with self.sessions.begin() as s:
            return list((await s.execute(select(ApprovalEntry).where(ApprovalEntry.approval_id == approval_id)
                                         .order_by(ApprovalEntry.seq))).scalars())

    async def verify(self, approval_id: str) -> bool:
        """Whether the record's chain recomputes (the full check is `warden audit verify`)."""
        from responders.audit import verify

        _, _, breaks = verify(approval_link(e) for e in await self.timeline(approval_id))
        return not breaks

    async def _append(self, s: AsyncSession, approval_id: str, now: datetime, entry: Entry,
                      policy: str | None = None) -> None:
        """Append one entry to the record's chain; the record row is locked first so appenders take turns (the
        unique (approval_id, seq) makes a fork impossible even so)."""
        row_policy = (await s.execute(select(ApprovalRecord.policy_sha256).where(ApprovalRecord.id == approval_id)
                                      .with_for_update())).scalar_one()
        live = self.live_policy() if self.live_policy is not None else None
        last = (await s.execute(select(ApprovalEntry.seq, ApprovalEntry.hash).where(
            ApprovalEntry.approval_id == approval_id).order_by(ApprovalEntry.seq.desc()).limit(1))).first()
        seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
        detail = redact_detail(entry.detail)
        sha = live or policy or row_policy
        row = ApprovalEntry(approval_id=approval_id, at=now, kind=entry.kind, actor=entry.actor,
                            identity=entry.identity, detail=detail, policy_sha256=sha, seq=seq, prev_hash=prev)
        row.hash = entry_hash(approval_chain(approval_id), seq, prev, approval_content(
            approval_id=approval_id, at=now, kind=entry.kind, actor=entry.actor, identity=entry.identity,
            policy_sha256=sha, detail=detail))
        s.add(row)
        await s.flush()


def chain_of(record: ApprovalRecord) -> list[OwnerRef]:
    """The owners the request climbs through, in order."""
    return [OwnerRef.model_validate(o) for o in record.chain]


def deciders_of(record: ApprovalRecord) -> list[OwnerRef]:
    """The owners who may decide the request now: those of the chain reached so far who decide."""
    return [OwnerRef.model_validate(o) for o in record.chain[: record.level + 1] if o.get("decides", True)]


def decides(record: ApprovalRecord, level: int) -> bool:
    return bool(record.chain[level].get("decides", True))


def deadline(record: ApprovalRecord, since: datetime) -> datetime:
    return since + timedelta(seconds=record.timeout_s)
