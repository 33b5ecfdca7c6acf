"""The outbox rooms: leases taken by `Outbox.claim_due`, and `Claims`' writes fenced by the claim token."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from responders.db import make_engine
from responders.store.notices import Claimed, NoticeKind, Posted
from responders.store.outbox import Outbox
from tests.support.incident_helpers import finding
from tests.support.store_rooms import T0, notifications, rooms_on

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
        assert not await store.claims.renew(lost, later + LEASE)
        assert await store.claims.hold([lost], later + 2 * LEASE) == 0
        assert not await store.claims.give_back(lost, "lease ended")
        assert not await store.claims.retry_later(lost, "boom", later)
        assert not await store.claims.defer(lost, "429", later)
        assert not await store.claims.dead_letter(lost, "gave up", later)
        assert not await store.claims.mark_delivered(lost, ROOT, later)
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


async def test_the_first_recorded_root_stays_the_one_follow_ups_thread_under(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [root] = await store.outbox.claim_due(T0, LEASE)
        assert isinstance(root, Claimed)
        async with store.sessions.begin() as s:  # a second root row of the incident (two workers added one each)
            await store.outbox.add_notifications(s, 1, NoticeKind.root, root.target, now=T0)
        [second] = await store.outbox.claim_due(T0, LEASE)
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
