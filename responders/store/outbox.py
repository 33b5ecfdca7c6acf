"""The outbox's claiming side: one row per notifier for every change, and the leases workers take on due rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders import storms
from responders.budget import Budget, lock_buckets, save_buckets, wait_for
from responders.budget import block as block_channel
from responders.db import session_factory
from responders.db.models import Incident, IncidentMessage, Notification, NotifyGroup, ReviewDigest
from responders.digests import view_of_digest
from responders.store.approval_asks import claimable_asks
from responders.store.common import rowcount
from responders.store.notices import (
    PRIORITY,
    AnyClaimed,
    Claimed,
    ClaimedDigest,
    ClaimedGroup,
    NoticeKind,
    Pending,
    Posted,
)
from responders.store.views import containment_of, view_of
from warden.contract.findings import FindingOwners, OwnerRef
from warden.contract.matrix import Tier
from warden.telemetry import metrics


class Outbox:
    """Every change is recorded as one outbox row for each of `notifiers` (the names this worker delivers to), so
    each notifier has its own root, retries and dead letters; `claim_due` leases the due ones to this worker.

    `budget` is each channel's send budget (messages per second, burst), shared through the database by every
    worker; None: unlimited. `api_url` is the incident API's base URL, for the digests' links."""

    def __init__(self, engine: AsyncEngine, notifiers: Sequence[str], *, budget: Budget | None = None,
                 api_url: str | None = None) -> None:
        if not notifiers:
            raise ValueError("an outbox needs at least one notifier to record notifications for")
        self.sessions = session_factory(engine)
        self.dialect = engine.dialect.name
        self.notifiers = tuple(notifiers)
        self.budget = budget
        self.api_url = api_url
        self.budget_wait_s: float | None = None  # after a claim: when the budget frees the next skipped row

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
                await storms.refresh_by_id(s, group_id, now,
                                           self.notifiers)  # the digest shows its new count and status
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
            decisions, steps = await containment_of(s, {incident.id for _, incident, _ in rows})
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
            candidates += await claimable_asks(s, due, token, fetch)
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

    async def release_claims(self) -> int:
        """Forget every lease: only safe when no other worker shares the database (the SQLite default)."""
        async with self.sessions.begin() as s:
            result = await s.execute(update(Notification).where(
                Notification.status == Pending.pending.value, Notification.claimed_until.is_not(None),
            ).values(claimed_until=None, claim=None))
            return rowcount(result)
