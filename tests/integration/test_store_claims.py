"""The outbox rooms: leases taken by `Outbox.claim_due`, and `Claims`' writes fenced by the claim token, with what each
settled write records for a root, a review digest, a storm's group digest and an approval ask."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from responders.db import make_engine
from responders.db.models import ApprovalRecord, IncidentMessage, TimelineEntry
from responders.review_digest import make_digests
from responders.store.approval_asks import record_asks
from responders.store.notices import (
    AnyClaimed,
    Claimed,
    ClaimedApproval,
    ClaimedDigest,
    ClaimedGroup,
    NoticeKind,
    Posted,
)
from responders.store.outbox import Outbox
from responders.store.rooms import Store
from tests.support.incident_helpers import POLICY, finding
from tests.support.store_rooms import T0, notifications, rooms_on
from warden.contract.findings import OwnerRef
from warden.contract.matrix import Tier

LEASE = timedelta(seconds=30)
ROOT = Posted("C0FINOPS", "1700000000.000001")


async def test_a_leased_row_is_not_claimed_again_until_its_lease_ends_then_with_a_new_token(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [first] = await store.outbox.claim_due(T0, LEASE)
        assert await store.outbox.claim_due(T0 + LEASE - timedelta(seconds=1), LEASE) == []
        [again] = await store.outbox.claim_due(T0 + LEASE, LEASE)
        [row] = await notifications(store)
    assert (first.id, first.attempts) == (again.id, 1) and again.attempts == 2
    assert again.claim != first.claim
    assert (row.claim, row.claimed_until, row.attempts) == (again.claim, T0 + 2 * LEASE, 2)


async def test_a_lost_claim_writes_nothing_and_the_new_holder_s_writes_count(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [lost] = await store.outbox.claim_due(T0, LEASE)
        [held] = await store.outbox.claim_due(T0 + LEASE, LEASE)  # the first lease ran out: another claim took it
        later = T0 + LEASE + timedelta(seconds=1)
        assert await store.claims.renew(lost, later + LEASE) is False
        assert await store.claims.hold([lost], later + 2 * LEASE) == 0
        assert await store.claims.give_back(lost, "lease ended") is False
        assert await store.claims.retry_later(lost, "boom", later) is False
        assert await store.claims.defer(lost, "429", later) is False
        assert await store.claims.dead_letter(lost, "gave up", later) is False
        assert await store.claims.mark_delivered(lost, ROOT, later) is False
        [row] = await notifications(store)
        assert (row.status, row.claim, row.claimed_until, row.attempts, row.last_error) == (
            "pending", held.claim, T0 + 2 * LEASE, 2, None), "untouched by the lost claim"
        assert await store.claims.renew(held, later + LEASE)
        assert await store.claims.mark_delivered(held, ROOT, later)
        [row] = await notifications(store)
        kinds = [e.kind for e in await store.timeline.entries(1)]
    assert (row.status, row.address, row.ref, row.claimed_until) == ("delivered", ROOT.address, ROOT.ref, None)
    assert kinds.count("notified") == 1 and "notification_dead_lettered" not in kinds
    assert not await store.claims.renew(held, later + LEASE), "a delivered row is no longer held"


async def test_hold_lengthens_a_waiting_lease_and_never_shortens_one(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [claimed] = await store.outbox.claim_due(T0, LEASE)
        assert await store.claims.hold([claimed], T0 + LEASE - timedelta(seconds=5)) == 0, "shorter: not held"
        assert await store.claims.hold([], T0 + 2 * LEASE) == 0
        assert await store.claims.hold([claimed], T0 + 2 * LEASE) == 1
        [row] = await notifications(store)
    assert row.claimed_until == T0 + 2 * LEASE


async def test_give_back_makes_the_row_due_at_once_and_retry_later_counts_the_attempt_but_defer_does_not(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [c] = await store.outbox.claim_due(T0, LEASE)
        assert await store.claims.give_back(c, "lease ended before the send")
        [row] = await notifications(store)
        assert (row.claim, row.claimed_until, row.last_error) == (None, None, "lease ended before the send")
        [c] = await store.outbox.claim_due(T0, LEASE)  # due again at once, for any worker
        assert await store.claims.defer(c, "rate limited", T0 + timedelta(seconds=5))
        [row] = await notifications(store)
        assert (row.attempts, row.next_attempt_at, row.claim) == (1, T0 + timedelta(seconds=5), None), "not counted"
        assert await store.outbox.claim_due(T0 + timedelta(seconds=4), LEASE) == []
        [c] = await store.outbox.claim_due(T0 + timedelta(seconds=5), LEASE)
        assert await store.claims.retry_later(c, "timeout", T0 + timedelta(seconds=9))
        [row] = await notifications(store)
    assert (row.attempts, row.next_attempt_at, row.last_error) == (2, T0 + timedelta(seconds=9), "timeout")


async def test_a_follow_up_waits_for_its_notifier_s_root_and_a_dead_root_releases_it(incident_db: str) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        await store.incidents.record_finding(finding("billing-agent-1"), T0 + timedelta(seconds=1))  # a repeat
        roots = await store.outbox.claim_due(T0 + timedelta(seconds=2), LEASE)
        assert sorted((c.kind, c.notifier) for c in roots) == [(NoticeKind.root, "console"), (NoticeKind.root, "slack")]
        by_notifier = {c.notifier: c for c in roots}
        assert await store.claims.mark_delivered(by_notifier["slack"], ROOT, T0)
        assert await store.claims.dead_letter(by_notifier["console"], "no contact", T0)
        follow_ups = await store.outbox.claim_due(T0 + timedelta(seconds=2), LEASE)
    assert sorted((c.kind, c.notifier) for c in follow_ups) == [(NoticeKind.repeat, "console"),
                                                               (NoticeKind.repeat, "slack")]
    threaded = {c.notifier: c for c in follow_ups if isinstance(c, Claimed)}
    assert threaded["slack"].root == ROOT and threaded["console"].root is None


async def two_root_rows(store: Store) -> tuple[Claimed, AnyClaimed]:
    """Incident #1 with two root rows (two workers each added one), both claimed: the first recorded, then the other."""
    await store.incidents.record_finding(finding("billing-agent-1"), T0)
    [first] = await store.outbox.claim_due(T0, LEASE)
    assert isinstance(first, Claimed)
    async with store.sessions.begin() as s:
        await store.outbox.add_notifications(s, 1, NoticeKind.root, first.target, now=T0)
    [second] = await store.outbox.claim_due(T0, LEASE)
    return first, second


async def test_the_first_recorded_root_stays_the_one_follow_ups_thread_under(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        root, second = await two_root_rows(store)
        assert await store.claims.mark_delivered(root, ROOT, T0)
        assert await store.claims.mark_delivered(second, Posted("C0FINOPS", "1700000000.000002"), T0)
        await store.incidents.record_finding(finding("billing-agent-1"), T0 + timedelta(seconds=1))
        [repeat] = await store.outbox.claim_due(T0 + timedelta(seconds=1), LEASE)
        notified = [e.detail for e in await store.timeline.entries(1) if e.kind == "notified"]
    assert isinstance(repeat, Claimed) and repeat.root == ROOT
    assert notified[-1]["duplicate_of"] == ROOT.ref and "duplicate_of" not in notified[0]


@pytest.mark.parametrize("incident_db", ["sqlite"], indirect=True)
async def test_release_claims_forgets_every_lease(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        await store.outbox.claim_due(T0, LEASE)
        assert await store.outbox.release_claims() == 1
        [row] = await notifications(store)
        assert (row.claim, row.claimed_until) == (None, None)
        assert len(await store.outbox.claim_due(T0, LEASE)) == 1, "due again before its lease would have ended"


async def test_an_outbox_needs_a_notifier(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'incidents.db'}")
    try:
        with pytest.raises(ValueError, match="at least one notifier"):
            Outbox(engine, [])
    finally:
        await engine.dispose()


async def test_hold_lengthens_only_a_lease_that_ends_before_the_new_deadline(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [claimed] = await store.outbox.claim_due(T0, LEASE)
        assert await store.claims.hold([claimed], T0 + LEASE) == 0, "held exactly that long already"
        assert await store.claims.hold([claimed], T0 + LEASE + timedelta(microseconds=1)) == 1


async def test_a_delivered_root_is_the_notifier_s_live_message_of_the_incident(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [root] = await store.outbox.claim_due(T0, LEASE)
        assert await store.claims.mark_delivered(root, ROOT, T0) is True
        async with store.sessions() as s:
            [message] = (await s.execute(select(IncidentMessage))).scalars()
    assert (message.incident_id, message.notifier, message.address, message.ref, message.dead) == (
        1, "slack", ROOT.address, ROOT.ref, False)


async def test_a_digest_s_outcome_is_recorded_on_every_incident_it_carried(incident_db: str) -> None:
    """Review incidents reach their responder in a digest: its delivery (one notifier) and its dead letter (the
    other) each say so on the timeline of every incident it carried, and both writes report that they counted."""
    review = [finding("billing-agent-1", tool).model_copy(update={"tier": Tier.review})
              for tool in ("shell.exec", "net.fetch")]
    later = T0 + timedelta(hours=2)
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        for f in review:
            await store.incidents.record_finding(f, T0)
        [(digest_id, carried)] = await make_digests(store, later, timedelta(hours=1))
        claimed = {c.notifier: c for c in await store.outbox.claim_due(later, LEASE)}
        assert carried == 2 and all(isinstance(c, ClaimedDigest) for c in claimed.values())
        assert await store.claims.mark_delivered(claimed["slack"], ROOT, later) is True
        assert await store.claims.dead_letter(claimed["console"], "no such channel", later) is True
        timelines = [await store.timeline.entries(i) for i in (1, 2)]
    for entries in timelines:
        said = [(e.kind, e.detail["via"], e.detail["digest"]) for e in entries
                if e.kind in ("notified", "notification_dead_lettered")]
        assert said == [("notified", "slack", digest_id), ("notification_dead_lettered", "console", digest_id)]


async def test_a_group_digest_s_outcome_is_recorded_on_every_member_it_named(incident_db: str) -> None:
    """A storm's members reach their responder in the group's digest: its delivery and its dead letter (on two
    notifiers) each say so on every member's timeline, and both writes report that they counted."""
    async with rooms_on(incident_db, ["slack", "console"], matrix=POLICY.matrix) as store:
        for i in range(3):  # the first pages; the next two, within the group interval, join its digest
            await store.incidents.record_finding(finding("support-bot-1", f"tool.{i}"), T0 + timedelta(seconds=i))
        now = T0 + timedelta(minutes=10)
        claimed = await store.outbox.claim_due(now, LEASE)
        groups = {c.notifier: c for c in claimed if isinstance(c, ClaimedGroup)}
        assert sorted(groups) == ["console", "slack"]
        members = sorted(line.id for line in groups["slack"].group.lines)
        assert await store.claims.mark_delivered(groups["slack"], ROOT, now) is True
        assert await store.claims.dead_letter(groups["console"], "no such channel", now) is True
        timelines = {m: await store.timeline.entries(m) for m in members}
    assert members == [2, 3]
    for entries in timelines.values():
        said = [(e.kind, e.detail["via"]) for e in entries if e.kind in ("notified", "notification_dead_lettered")]
        assert said == [("notified", "slack"), ("notification_dead_lettered", "console")]


async def test_an_approval_ask_s_outcome_is_its_own_row_and_no_incident_s(incident_db: str) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        async with store.sessions.begin() as s:
            s.add(ApprovalRecord(
                id="req-1", gateway="gw", agent_id="iam-agent-1", workflow="access-provisioner",
                verdict="approval_required", status="pending", reason="needs a human", evidence={}, action={},
                target="user:kim", chain=[{"id": "jordan", "kind": "person"}], timeout_s=300.0, requested_at=T0,
                policy_sha256=""))
            target = OwnerRef(id="jordan", kind="person")
            assert await record_asks(s, "req-1", NoticeKind.approval, target, notifiers=["slack", "console"],
                                     now=T0, level=0) == ["slack", "console"]
        claimed = {c.notifier: c for c in await store.outbox.claim_due(T0, LEASE)}
        assert all(isinstance(c, ClaimedApproval) for c in claimed.values())
        assert await store.claims.mark_delivered(claimed["slack"], ROOT, T0) is True
        assert await store.claims.dead_letter(claimed["console"], "no such channel", T0) is True
        rows = {n.notifier: n for n in await notifications(store)}
        async with store.sessions() as s:
            entries = (await s.execute(select(TimelineEntry))).scalars().all()
    assert (rows["slack"].status, rows["slack"].ref, rows["console"].status) == ("delivered", ROOT.ref, "dead")
    assert entries == [], "an approval request's record is its own chain, not an incident's"


@pytest.mark.parametrize("incident_db", ["postgresql"], indirect=True)
async def test_two_root_rows_delivered_at_once_agree_on_one_message(incident_db: str) -> None:
    """Two workers each delivered a root row of one incident (two were recorded) at the same moment: both find no
    message row and add one; the unique (incident, notifier) lets one in, and the other takes that one instead of
    failing, so both deliveries are recorded and follow-ups thread under the first. PostgreSQL only: SQLite lets
    one writer at a time in, so the two never overlap."""
    async with rooms_on(incident_db) as store:
        first, second = await two_root_rows(store)
        other = Posted("C0FINOPS", "1700000000.000002")
        delivered = await asyncio.gather(store.claims.mark_delivered(first, ROOT, T0),
                                         store.claims.mark_delivered(second, other, T0))
        async with store.sessions() as s:
            messages = list((await s.execute(select(IncidentMessage))).scalars())
        notified = [e.detail for e in await store.timeline.entries(1) if e.kind == "notified"]
    assert list(delivered) == [True, True]
    [message] = messages
    assert (message.address, message.ref) in ((ROOT.address, ROOT.ref), (other.address, other.ref))
    assert sorted("duplicate_of" in d for d in notified) == [False, True], "the later one names the first"
