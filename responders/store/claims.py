"""The outbox's fenced writes: what a worker records about a row it claimed counts only while its claim holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders import storms
from responders.db import session_factory
from responders.db.models import IncidentMessage, Notification
from responders.store.common import rowcount
from responders.store.notices import (
    AnyClaimed,
    Claimed,
    ClaimedApproval,
    ClaimedDigest,
    ClaimedGroup,
    NoticeKind,
    Pending,
    Posted,
)
from responders.store.timeline import Timeline


class Claims:
    """Renews, holds, gives back and settles (delivered, retry, deferred, dead) the rows `Outbox.claim_due` leased:
    every write is conditional on the claim token (the fence), so a worker whose lease ran out and whose row another
    worker claimed since writes nothing."""

    def __init__(self, engine: AsyncEngine, timeline: Timeline) -> None:
        self.sessions = session_factory(engine)
        self.dialect = engine.dialect.name
        self.timeline = timeline

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
        tail of its own batch the same way. Fenced like `renew`; returns how many leases it lengthened."""
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
            if isinstance(claimed, ClaimedApproval):  # the row is the record (the request's chain says it was routed)
                return True
            detail: dict[str, Any] = {"kind": claimed.kind.value, "to": claimed.target.id, "via": claimed.notifier,
                                      "address": posted.address, "ref": posted.ref}
            if isinstance(claimed, ClaimedDigest):  # each incident it carried says it reached its responder
                for incident_id in claimed.digest.incidents:
                    await self.timeline.log_entry(s, incident_id, now, "notified",
                                                  detail={**detail, "digest": claimed.digest.id})
                return True
            if isinstance(claimed, ClaimedGroup):  # each member it named says which digest message carried it
                await storms.recorded(self.timeline, s, dialect=self.dialect, group_id=claimed.group.id,
                                      notifier=claimed.notifier, epoch=claimed.group.epoch,
                                      lines=claimed.group.lines, posted=posted, target=claimed.target, now=now)
                return True
            if claimed.kind is NoticeKind.root:
                root = await self._message(s, claimed, now)
                if root.ref is None:
                    root.address, root.ref, root.dead = posted.address, posted.ref, False
                elif (root.address, root.ref) != (posted.address, posted.ref):
                    detail["duplicate_of"] = root.ref  # another root row of this incident was recorded first
            await self.timeline.log_entry(s, claimed.incident.id, now, "notified", detail=detail)
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
            if isinstance(claimed, ClaimedApproval):  # the row says so (and the console alert carries it)
                return True
            detail = {"kind": claimed.kind.value, "to": claimed.target.id, "via": claimed.notifier,
                      "attempts": claimed.attempts, "error": error}
            if isinstance(claimed, ClaimedDigest):  # each incident it carried says its responder was not told
                for incident_id in claimed.digest.incidents:
                    await self.timeline.log_entry(s, incident_id, now, "notification_dead_lettered",
                                                  detail={**detail, "digest": claimed.digest.id})
                return True
            if isinstance(claimed, ClaimedGroup):  # each member it was to name says it was not (the next may)
                for line in sorted(claimed.group.lines, key=lambda ln: ln.id):
                    await self.timeline.log_entry(s, line.id, now, "notification_dead_lettered",
                                                  detail={**detail, "group": claimed.group.id})
                return True
            if claimed.kind is NoticeKind.root:
                root = await self._message(s, claimed, now)
                if root.ref is None:
                    root.dead = True
            await self.timeline.log_entry(s, claimed.incident.id, now, "notification_dead_lettered", detail=detail)
            return True
