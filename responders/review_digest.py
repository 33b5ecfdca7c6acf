"""Review digests: every interval, each responder's review-tier incidents not yet told go out in one message.

A digest is made in one transaction: its row (unique per responder and period, so two workers never make the same
one), an entry on each carried incident's timeline naming it, and one outbox row per notifier. From there the
outbox delivers it like any notification: leased, fenced, recorded, retried, dead-lettered."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from responders.db.models import Incident, Notification, ReviewDigest
from responders.digests import MAX_INCIDENTS, Member, period_end, summarise
from responders.store.common import WARDEN
from responders.store.notices import NoticeKind, Pending
from responders.store.rooms import Store
from warden.contract.findings import FindingOwners
from warden.kit.loop import PollingLoop
from warden.telemetry import metrics

log = logging.getLogger("warden.review")


class ReviewDigests:
    """Makes the digests that are due every `poll_s` (`loop`); `on_made` is told when there is something to send."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime], interval: timedelta, poll_s: float,
                 on_made: Callable[[], None]) -> None:
        self.store, self.clock, self.interval, self.on_made = store, clock, interval, on_made
        self.loop = PollingLoop("warden.review-digest", poll_s, self.make_due, log)

    async def make_due(self) -> int:
        """Make every digest due at the latest boundary. Returns how many were made."""
        made = await make_digests(self.store, self.clock(), self.interval)
        for digest_id, carried in made:
            metrics.REVIEW_DIGESTS.inc()
            metrics.REVIEW_DIGEST_INCIDENTS.inc(carried)
            log.warning("review digest #%d made: %d incident(s)", digest_id, carried)
        if made:
            self.on_made()
        return len(made)


async def make_digests(store: Store, now: datetime, interval: timedelta) -> list[tuple[int, int]]:
    """One digest per responder with review incidents waiting since before the latest boundary, unless this
    period's digest to them exists already (then they wait for the next). Returns (digest id, incidents carried).

    Waiting incidents are locked (SKIP LOCKED: one another transaction is grouping into waits for the next digest),
    so two workers at the same boundary find each incident once; the unique (responder, period_end) keeps it to
    one message per responder and interval even when they do not."""
    boundary = period_end(now, interval)
    made: list[tuple[int, int]] = []
    async with store.sessions.begin() as s:
        waiting = list((await s.execute(
            select(Incident).where(Incident.review_pending_since.is_not(None),
                                   Incident.review_pending_since < boundary)
            .order_by(Incident.review_pending_since, Incident.id).with_for_update(skip_locked=True)
        )).scalars())
        by_responder: dict[str, list[Incident]] = {}
        for incident in waiting:
            by_responder.setdefault(FindingOwners.model_validate(incident.owners).responder.id, []).append(incident)
        for responder_id, incidents in sorted(by_responder.items()):
            carried, left = incidents[:MAX_INCIDENTS], len(incidents) - MAX_INCIDENTS
            members = [Member(i.id, i.rule, i.workflow, i.agent_id, i.target, i.count, i.review_pending_since)
                       for i in carried if i.review_pending_since is not None]
            # The responder as frozen on the newest incident: its contacts are the freshest the digest knows.
            target = FindingOwners.model_validate(max(carried, key=lambda i: i.id).owners).responder
            digest = ReviewDigest(responder=responder_id, period_end=boundary, target=target.model_dump(mode="json"),
                                  summary=summarise(members, until=boundary, waiting=max(left, 0)), created_at=now)
            try:
                async with s.begin_nested():
                    s.add(digest)
            except IntegrityError:  # this period's digest to them is made: these wait for the next one
                continue
            for incident in sorted(carried, key=lambda i: i.id):  # one lock order for every writer of many incidents
                incident.review_pending_since = None
                await store.timeline.log_entry(s, incident.id, now, "review_digest", actor=WARDEN, detail={
                    "digest": digest.id, "to": responder_id, "period_end": boundary.isoformat(),
                    "via": list(store.notifiers), "count": incident.count,
                })
            for name in store.notifiers:
                s.add(Notification(incident_id=None, digest_id=digest.id, notifier=name, kind=NoticeKind.digest.value,
                                   target=target.model_dump(mode="json"), note=None, status=Pending.pending.value,
                                   attempts=0, next_attempt_at=now, created_at=now))
            made.append((digest.id, len(carried)))
    return made
