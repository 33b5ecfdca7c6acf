"""The outbox room: what `Outbox.add_notifications` records (one row per notifier, a root first where a notifier has
none, nothing for a muted or non-page incident, a group's digest for a member), what `claim_due` hands out (pages
first, groups' digests, review digests and approval asks with what each needs, within each channel's budget), and
the approval desk's asks and closes (`record_asks`, `claimable_asks`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from responders.budget import Budget
from responders.db.models import (
    ApprovalRecord,
    ChannelBudget,
    Incident,
    IncidentMessage,
    Notification,
    ReviewDigest,
)
from responders.digests import Member, summarise
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
from tests.support.row_locks import without_waiting
from tests.support.store_rooms import T0, incident_row, notifications, rooms_on
from warden.contract.findings import FindingOwners, OwnerRef

LEASE = timedelta(seconds=30)
SECOPS = OwnerRef(id="secops")
JORDAN = OwnerRef(id="jordan", contacts={"slack": "U0JORDAN"})
ROOT = Posted("C0FINOPS", "1700000000.000001")
BUDGET = Budget(rate=1.0, burst=3)  # a bucket of burst - rate = 2 messages, refilled at one a second


def responder_of(row: Incident) -> OwnerRef:
    return FindingOwners.model_validate(row.owners).responder


def rows_of(notes: Sequence[Notification], incident_id: int) -> list[tuple[str | None, str, str]]:
    return [(n.notifier, n.kind, n.target["id"]) for n in notes if n.incident_id == incident_id]


async def set_incident(store: Store, incident_id: int, **values: Any) -> None:
    async with store.sessions.begin() as s:
        await s.execute(update(Incident).where(Incident.id == incident_id).values(**values))


async def add(store: Store, incident_id: int, kind: NoticeKind, target: OwnerRef, *, outbox: Outbox | None = None,
              **kw: Any) -> None:
    async with store.sessions.begin() as s:
        await (outbox or store.outbox).add_notifications(s, incident_id, kind, target, **kw)


async def budgets(store: Store) -> dict[str, ChannelBudget]:
    async with store.sessions() as s:
        return {r.channel: r for r in (await s.execute(select(ChannelBudget))).scalars()}


# -- add_notifications -----------------------------------------------------------------------------------------------


async def test_a_change_is_one_pending_row_per_notifier_due_when_asked_with_its_effect_key(incident_db: str) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        roots = len(await notifications(store))
        later = T0 + timedelta(minutes=1)
        await add(store, 1, NoticeKind.escalation, SECOPS, now=T0, note="step 2", effect_key="escalation:1:1",
                  at=later)
        await add(store, 1, NoticeKind.update, SECOPS, now=T0, only=["console"])
        await add(store, 1, NoticeKind.update, SECOPS, now=T0, only=[])
        added = (await notifications(store))[roots:]
    assert roots == 2
    assert [(n.incident_id, n.notifier, n.kind, n.target, n.note, n.status, n.attempts, n.next_attempt_at,
             n.created_at, n.effect_key, n.claim, n.claimed_until) for n in added] == [
        (1, "slack", "escalation", SECOPS.model_dump(mode="json"), "step 2", "pending", 0, later, T0,
         "escalation:1:1/slack", None, None),
        (1, "console", "escalation", SECOPS.model_dump(mode="json"), "step 2", "pending", 0, later, T0,
         "escalation:1:1/console", None, None),
        (1, "console", "update", SECOPS.model_dump(mode="json"), None, "pending", 0, T0, T0, None, None, None),
    ]


async def test_review_and_log_incidents_and_muted_pages_add_no_row(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        for tool in ("tool.a", "tool.b", "tool.c", "tool.d", "tool.e"):
            await store.incidents.record_finding(finding("billing-agent-1", tool), T0)
        await set_incident(store, 1, tier="review")
        await set_incident(store, 2, tier="log")
        await set_incident(store, 3, silenced_by=1)
        await set_incident(store, 4, inhibited_by=5)
        before = await notifications(store)
        for incident_id in range(1, 6):
            await add(store, incident_id, NoticeKind.update, SECOPS, now=T0 + timedelta(seconds=1))
        added = (await notifications(store))[len(before):]
    assert [(n.incident_id, n.kind) for n in added] == [(5, "update")], "only the unmuted page tells anyone"


async def test_a_follow_up_for_a_notifier_without_a_root_gets_the_responder_s_root_first(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", "tool.a"), T0)
        responder = responder_of(await incident_row(store, 1)).id
        wider = Outbox(store.engine, ["slack", "email"])  # email was added to the notifiers after it opened
        now = T0 + timedelta(seconds=1)
        await add(store, 1, NoticeKind.update, SECOPS, outbox=wider, now=now, note="acknowledged")
        [email_root] = await Outbox(store.engine, ["email"]).claim_due(now, LEASE)  # its update waits for it
        assert (email_root.kind, email_root.target.id) == (NoticeKind.root, responder)
        assert await store.claims.mark_delivered(email_root, Posted("kim@example.com", "m-1"), now)
        await add(store, 1, NoticeKind.repeat, SECOPS, outbox=wider, now=now)  # rooted now: no second root
        await store.incidents.record_finding(finding("billing-agent-1", "tool.b"), T0)
        async with store.sessions.begin() as s:  # an email follow-up of incident 2 left without a root (a row an
            s.add(Notification(incident_id=2, notifier="email", kind="repeat", target=SECOPS.model_dump(mode="json"),
                               status="dead", attempts=1, next_attempt_at=T0, created_at=T0))  # old worker wrote)
        await add(store, 2, NoticeKind.update, SECOPS, outbox=wider, now=now)
        notes = await notifications(store)
    assert rows_of(notes, 1) == [("slack", "root", responder), ("email", "root", responder),
                                 ("slack", "update", "secops"), ("email", "update", "secops"),
                                 ("slack", "repeat", "secops"), ("email", "repeat", "secops")]
    assert rows_of(notes, 2) == [("slack", "root", responder), ("email", "repeat", "secops"),
                                 ("email", "root", responder), ("slack", "update", "secops"),
                                 ("email", "update", "secops")], "incident 1's email root is not incident 2's"
    [added_root] = [n for n in notes if (n.incident_id, n.notifier, n.kind) == (2, "email", "root")]
    assert (added_root.note, added_root.status, added_root.next_attempt_at) == (None, "pending", now)


async def test_a_member_s_repeats_and_updates_refresh_its_group_s_digest_and_its_escalation_pages(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db, ["slack", "console"], matrix=POLICY.matrix) as store:
        await store.incidents.record_finding(finding("support-bot-1", "tool.0"), T0)  # the group's leader: pages
        await store.incidents.record_finding(finding("support-bot-1", "tool.1"), T0)  # a member: in the digest
        leader, member = await incident_row(store, 1), await incident_row(store, 2)
        assert (leader.group_role, member.group_role, member.group_id) == ("leader", "member", leader.group_id)
        sent = await store.outbox.claim_due(T0, LEASE)  # the leader's roots and the digest's first refresh
        assert sorted((c.kind, c.notifier) for c in sent) == [
            (NoticeKind.group, "console"), (NoticeKind.group, "slack"),
            (NoticeKind.root, "console"), (NoticeKind.root, "slack")]
        for c in sent:
            assert await store.claims.mark_delivered(c, Posted("C0AIPLAT", f"ts-{c.id}"), T0)
        before = len(await notifications(store))
        now = T0 + timedelta(seconds=1)
        await add(store, 2, NoticeKind.update, SECOPS, now=now, only=["slack"])
        refreshed = (await notifications(store))[before:]
        await add(store, 1, NoticeKind.update, SECOPS, now=now)
        await add(store, 2, NoticeKind.escalation, SECOPS, now=now)
        await add(store, 2, NoticeKind.repeat, SECOPS, now=now)
        notes = await notifications(store)
    responder = responder_of(member).id
    assert [(n.group_id, n.notifier, n.kind, n.incident_id) for n in refreshed] == [
        (leader.group_id, "slack", "group", None), (leader.group_id, "console", "group", None)]
    assert rows_of(notes, 1)[-2:] == [("slack", "update", "secops"), ("console", "update", "secops")]
    assert rows_of(notes, 2) == [("slack", "root", responder), ("console", "root", responder),
                                 ("slack", "escalation", "secops"), ("console", "escalation", "secops"),
                                 ("slack", "repeat", "secops"), ("console", "repeat", "secops")]


# -- claim_due --------------------------------------------------------------------------------------------------------


async def test_a_claim_takes_pages_before_replies_and_the_limit_leaves_the_rest_due(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", "tool.a"), T0)
        [root] = await store.outbox.claim_due(T0, LEASE)
        assert await store.claims.mark_delivered(root, ROOT, T0)
        await store.incidents.record_finding(finding("billing-agent-1", "tool.a"), T0 + timedelta(seconds=1))
        await add(store, 1, NoticeKind.update, SECOPS, now=T0 + timedelta(seconds=1), note="acknowledged")
        await store.incidents.record_finding(finding("billing-agent-1", "tool.b"), T0 + timedelta(seconds=2))
        await add(store, 1, NoticeKind.escalation, SECOPS, now=T0 + timedelta(seconds=2))
        now = T0 + timedelta(seconds=3)
        firsts = [await store.outbox.claim_due(now, LEASE, limit=1) for _ in range(2)]
        rest = await store.outbox.claim_due(now, LEASE)
        ids = [n.id for n in await notifications(store)]
    assert [[(c.kind, c.incident.id) for c in claimed if isinstance(c, Claimed)] for claimed in firsts] == [
        [(NoticeKind.root, 2)], [(NoticeKind.escalation, 1)]]
    assert [(c.kind, c.id) for c in rest] == [(NoticeKind.repeat, ids[1]), (NoticeKind.update, ids[2])]
    assert all(isinstance(c, Claimed) and c.root == ROOT and c.attempts == 1 for c in rest)
    assert [c.note for c in rest if isinstance(c, Claimed)] == [None, "acknowledged"]


async def test_a_follow_up_waits_while_its_notifier_s_root_message_has_no_reference_yet(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [root] = await store.outbox.claim_due(T0, LEASE)
        assert await store.claims.mark_delivered(root, ROOT, T0)
        await store.incidents.record_finding(finding("billing-agent-1"), T0 + timedelta(seconds=1))
        async with store.sessions.begin() as s:  # the message row as a root's delivery adds it, before its ref
            await s.execute(update(IncidentMessage).values(ref=None, address=None))
        assert await store.outbox.claim_due(T0 + timedelta(seconds=1), LEASE) == []
        async with store.sessions.begin() as s:
            await s.execute(update(IncidentMessage).values(ref=ROOT.ref, address=None))
        [repeat] = await store.outbox.claim_due(T0 + timedelta(seconds=1), LEASE)
    assert isinstance(repeat, Claimed) and repeat.root == Posted("", ROOT.ref)


async def test_a_worker_claims_only_its_own_notifiers_rows(incident_db: str) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        [console] = await Outbox(store.engine, ["console"]).claim_due(T0, LEASE)
        [slack] = await store.outbox.claim_due(T0, LEASE)
    assert (console.notifier, slack.notifier) == ("console", "slack")


async def test_a_group_s_refresh_is_claimed_with_its_members_counts_and_the_message_to_update(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db, matrix=POLICY.matrix) as store:
        await store.incidents.record_finding(finding("support-bot-1", "tool.0"), T0)  # the leader
        await store.incidents.record_finding(finding("support-bot-1", "tool.1"), T0)
        await store.incidents.record_finding(finding("support-bot-1", "tool.1"), T0)  # a repeat of the member
        leader = await incident_row(store, 1)
        claimed = await store.outbox.claim_due(T0, LEASE)
        [first] = [c for c in claimed if isinstance(c, ClaimedGroup)]
        assert await store.claims.mark_delivered(first, Posted("C0AIPLAT", "g-1"), T0)
        await store.incidents.record_finding(finding("support-bot-1", "tool.2"), T0 + timedelta(seconds=1))
        [second] = await store.outbox.claim_due(T0 + timedelta(seconds=1), LEASE)
    assert [c.kind for c in claimed] == [NoticeKind.root, NoticeKind.group], "the page before the digest"
    responder = responder_of(leader)
    assert (first.notifier, first.attempts, first.target, first.root) == ("slack", 1, responder, None)
    assert (first.group.id, first.group.members, first.group.findings, first.group.epoch) == (
        leader.group_id, 1, 2, 1)
    assert [line.id for line in first.group.lines] == [2]
    assert first.group.agents == (("support-bot-1", 2),)
    assert isinstance(second, ClaimedGroup) and second.root == Posted("C0AIPLAT", "g-1")
    assert (second.attempts, second.group.members, second.group.findings, [ln.id for ln in second.group.lines]) == (
        1, 2, 3, [3])


async def test_a_review_digest_is_claimed_apart_from_the_limit_after_the_pages(incident_db: str) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        row = await incident_row(store, 1)
        responder = responder_of(row)
        summary = summarise([Member(1, row.rule, row.workflow, row.agent_id, row.target, row.count, T0)], until=T0)
        async with store.sessions.begin() as s:
            digest = ReviewDigest(responder=responder.id, period_end=T0, target=responder.model_dump(mode="json"),
                                  summary=summary, created_at=T0)
            s.add(digest)
            await s.flush()
            for name in ("slack", "console"):
                s.add(Notification(incident_id=None, digest_id=digest.id, notifier=name, kind="digest",
                                   target=responder.model_dump(mode="json"), status="pending", attempts=0,
                                   next_attempt_at=T0, created_at=T0))
        claimed = await store.outbox.claim_due(T0, LEASE, limit=1)
        rest = await store.outbox.claim_due(T0, LEASE, limit=1)
    assert [(type(c), c.notifier) for c in claimed] == [(Claimed, "slack"), (ClaimedDigest, "slack")]
    assert [(type(c), c.notifier) for c in rest] == [(Claimed, "console"), (ClaimedDigest, "console")]
    digest_claim = claimed[1]
    assert isinstance(digest_claim, ClaimedDigest)
    assert (digest_claim.attempts, digest_claim.target, digest_claim.claim) == (1, responder, claimed[0].claim)
    assert (digest_claim.digest.id, digest_claim.digest.responder, digest_claim.digest.incidents) == (
        digest.id, responder, (1,))


# -- the channel budget -----------------------------------------------------------------------------------------------


def to_channels(by_id: Mapping[int, Mapping[str, int]]) -> Any:
    """What each notification (by id) would post, per channel."""
    def spend(c: AnyClaimed) -> Mapping[str, int]:
        return by_id[c.id]
    return spend


async def test_a_budgeted_claim_takes_what_its_channel_has_left_and_says_when_the_next_may_go(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db) as store:
        for tool in ("tool.a", "tool.b", "tool.c"):
            await store.incidents.record_finding(finding("billing-agent-1", tool), T0)
        outbox = Outbox(store.engine, ["slack"], budget=BUDGET)
        spend = to_channels({1: {"C0FINOPS": 1}, 2: {"C0FINOPS": 1}, 3: {"C0FINOPS": 1}})
        first = await outbox.claim_due(T0, LEASE, spend=spend)
        wait = outbox.budget_wait_s
        left = (await budgets(store))["C0FINOPS"].tokens
        assert await outbox.claim_due(T0 + timedelta(seconds=0.5), LEASE, spend=spend) == []
        then = await outbox.claim_due(T0 + timedelta(seconds=1), LEASE, spend=spend)
    assert [c.id for c in first] == [1, 2] and wait == 1.0 and left == 0.0
    assert [c.id for c in then] == [3] and outbox.budget_wait_s is None


async def test_once_a_row_waits_for_its_channel_no_later_one_goes_there_but_other_channels_still_do(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db) as store:
        for tool in ("tool.a", "tool.b", "tool.c", "tool.d", "tool.e"):
            await store.incidents.record_finding(finding("billing-agent-1", tool), T0)
        outbox = Outbox(store.engine, ["slack"], budget=BUDGET)
        spend = to_channels({1: {"A": 1}, 2: {"A": 2}, 3: {"A": 1}, 4: {"B": 1, "A": 0}, 5: {"A": 0}})
        claimed = await outbox.claim_due(T0, LEASE, spend=spend)
        rows = await budgets(store)
    assert [c.id for c in claimed] == [1, 4, 5], "2 waits for A; 3 would fit but must not overtake it"
    assert outbox.budget_wait_s == 1.0
    assert {channel: r.tokens for channel, r in rows.items()} == {"A": 1.0, "B": 1.0}


async def test_a_budgeted_claim_stops_at_its_limit(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        for tool in ("tool.a", "tool.b"):
            await store.incidents.record_finding(finding("billing-agent-1", tool), T0)
        outbox = Outbox(store.engine, ["slack"], budget=Budget(rate=10.0, burst=20))
        spend = to_channels({1: {"C0FINOPS": 1}, 2: {"C0FINOPS": 1}})
        first = await outbox.claim_due(T0, LEASE, limit=1, spend=spend)
        second = await outbox.claim_due(T0, LEASE, limit=1, spend=spend)
    assert [c.id for c in first] == [1] and [c.id for c in second] == [2]


async def test_a_claim_without_a_budget_or_without_spend_is_unlimited_and_forgets_the_last_wait(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db) as store:
        for tool in ("tool.a", "tool.b", "tool.c", "tool.d"):
            await store.incidents.record_finding(finding("billing-agent-1", tool), T0)
        spend = to_channels({i: {"C0FINOPS": 1} for i in range(1, 5)})
        budgeted = Outbox(store.engine, ["slack"], budget=BUDGET)
        assert [c.id for c in await budgeted.claim_due(T0, LEASE, limit=1, spend=spend)] == [1]
        await budgeted.rate_limited("slack", "C0FINOPS", 30, T0)
        assert await budgeted.claim_due(T0, LEASE, spend=spend) == [] and budgeted.budget_wait_s == 30.0
        unspent = await budgeted.claim_due(T0, LEASE, limit=1)
        unbudgeted = Outbox(store.engine, ["slack"])
        rest = await unbudgeted.claim_due(T0, LEASE, spend=spend)
    assert [c.id for c in unspent] == [2] and budgeted.budget_wait_s is None
    assert [c.id for c in rest] == [3, 4] and unbudgeted.budget_wait_s is None


async def test_a_rate_limited_channel_waits_out_its_retry_after_for_every_worker(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        await store.outbox.rate_limited("slack", "C0FINOPS", 30, T0)  # no budget: nothing to record
        assert await budgets(store) == {}
        told, other = (Outbox(store.engine, ["slack"], budget=BUDGET) for _ in range(2))
        await told.rate_limited("slack", "C0FINOPS", 30, T0)
        row = (await budgets(store))["C0FINOPS"]
        spend = to_channels({1: {"C0FINOPS": 1}})
        assert await other.claim_due(T0 + timedelta(seconds=10), LEASE, spend=spend) == []
        wait = other.budget_wait_s
        assert await other.claim_due(T0 + timedelta(seconds=30), LEASE, spend=spend) == [], "then at the rate"
        [claimed] = await other.claim_due(T0 + timedelta(seconds=31), LEASE, spend=spend)
    assert (row.blocked_until, row.tokens) == (T0 + timedelta(seconds=30), 0.0)
    assert wait == 20.0 and claimed.id == 1


# -- the approval desk's asks -----------------------------------------------------------------------------------------


async def request(store: Store, rid: str, chain: list[dict[str, Any]], *, status: str = "pending") -> None:
    async with store.sessions.begin() as s:
        s.add(ApprovalRecord(id=rid, gateway="kafka", agent_id="iam-agent-1", workflow="access-provisioner",
                             verdict="approval_required", status=status, reason=f"{rid}: a role grant",
                             evidence={}, action={"tool": "iam.grant_role", "role": "admin"}, target="user:kim",
                             chain=chain, timeout_s=300.0, requested_at=T0, policy_sha256="0" * 64,
                             decided_by="jordan" if status != "pending" else None))


async def ask(store: Store, rid: str, kind: NoticeKind, target: OwnerRef, notifiers: Sequence[str], *,
              level: int | None = None, note: str | None = None) -> list[str]:
    async with store.sessions.begin() as s:
        return await record_asks(s, rid, kind, target, notifiers=notifiers, now=T0, level=level, note=note)


async def test_an_ask_is_one_row_per_notifier_and_recording_it_again_adds_nothing(incident_db: str) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        first = await ask(store, "req-1", NoticeKind.approval, JORDAN, ["slack", "console"], level=0)
        again = await ask(store, "req-1", NoticeKind.approval, JORDAN, ["slack", "console"], level=0)
        escalated = await ask(store, "req-1", NoticeKind.approval, SECOPS, ["slack"], level=1, note="escalated")
        notes = await notifications(store)
    assert (first, again, escalated) == (["slack", "console"], [], ["slack"])
    assert [(n.incident_id, n.approval_id, n.approval_level, n.notifier, n.kind, n.target, n.note, n.status,
             n.attempts, n.next_attempt_at, n.created_at, n.effect_key) for n in notes] == [
        (None, "req-1", 0, "slack", "approval", JORDAN.model_dump(mode="json"), None, "pending", 0, T0, T0,
         "approval:req-1:0/slack"),
        (None, "req-1", 0, "console", "approval", JORDAN.model_dump(mode="json"), None, "pending", 0, T0, T0,
         "approval:req-1:0/console"),
        (None, "req-1", 1, "slack", "approval", SECOPS.model_dump(mode="json"), "escalated", "pending", 0, T0, T0,
         "approval:req-1:1/slack"),
    ]


async def test_a_close_is_recorded_only_through_the_notifiers_its_request_was_asked_through(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        await ask(store, "req-1", NoticeKind.approval, JORDAN, ["slack"], level=0)
        await ask(store, "req-2", NoticeKind.approval, JORDAN, ["console"], level=0)  # another request
        closed = await ask(store, "req-1", NoticeKind.approval_closed, JORDAN, ["slack", "console"])
        again = await ask(store, "req-1", NoticeKind.approval_closed, JORDAN, ["slack", "console"])
        [close] = [n for n in await notifications(store) if n.kind == "approval_closed"]
    assert (closed, again) == (["slack"], [])
    assert (close.approval_id, close.approval_level, close.notifier, close.effect_key, close.status) == (
        "req-1", None, "slack", "approval:req-1:closed/slack", "pending")


async def test_a_claimed_ask_shows_its_request_and_offers_buttons_only_where_its_level_decides(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db) as store:
        await request(store, "req-1", [JORDAN.model_dump(mode="json"), {"id": "secops", "decides": False}])
        await request(store, "req-2", [])
        await ask(store, "req-1", NoticeKind.approval, JORDAN, ["slack"], level=0)
        await ask(store, "req-1", NoticeKind.approval, SECOPS, ["slack"], level=1, note="chase jordan")
        await ask(store, "req-2", NoticeKind.approval, JORDAN, ["slack"], level=0)
        claimed = await store.outbox.claim_due(T0, LEASE)
        ids = [n.id for n in await notifications(store)]
    assert all(isinstance(c, ClaimedApproval) for c in claimed)
    asks = [c for c in claimed if isinstance(c, ClaimedApproval)]
    assert [(c.id, c.kind, c.approval.id, c.target.id, c.note, c.buttons, c.attempts, c.messages) for c in asks] == [
        (ids[0], NoticeKind.approval, "req-1", "jordan", None, True, 1, ()),
        (ids[1], NoticeKind.approval, "req-1", "secops", "chase jordan", False, 1, ()),
        (ids[2], NoticeKind.approval, "req-2", "jordan", None, False, 1, ()),
    ]
    view = asks[0].approval
    assert (view.agent_id, view.workflow, view.action, view.reason, view.status, view.decided_by,
            view.requested_at) == ("iam-agent-1", "access-provisioner", {"tool": "iam.grant_role", "role": "admin"},
                                   "req-1: a role grant", "pending", None, T0)


async def test_a_close_waits_for_its_notifier_s_pending_asks_and_carries_every_delivered_one(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        await request(store, "req-1", [JORDAN.model_dump(mode="json"), SECOPS.model_dump(mode="json"),
                                       {"id": "ciso", "decides": False}], status="approved")
        await request(store, "req-2", [JORDAN.model_dump(mode="json")])
        for level, target in enumerate([JORDAN, SECOPS, OwnerRef(id="ciso")]):
            await ask(store, "req-1", NoticeKind.approval, target, ["slack", "console"], level=level)
        await ask(store, "req-2", NoticeKind.approval, JORDAN, ["slack"], level=0)
        asks = {(c.notifier, c.approval.id, c.target.id): c
                for c in await store.outbox.claim_due(T0, LEASE) if isinstance(c, ClaimedApproval)}
        assert await store.claims.mark_delivered(asks["slack", "req-1", "jordan"], Posted("C0SEC", "a-1"), T0)
        assert await store.claims.mark_delivered(asks["slack", "req-1", "secops"], Posted("C0SEC", "a-2"), T0)
        assert await store.claims.dead_letter(asks["slack", "req-1", "ciso"], "no channel", T0)
        assert await store.claims.mark_delivered(asks["console", "req-1", "jordan"], Posted("console", "c-1"), T0)
        await ask(store, "req-1", NoticeKind.approval_closed, SECOPS, ["slack", "console"])
        now = T0 + timedelta(seconds=1)
        first = await store.outbox.claim_due(now, LEASE)  # console's asks at levels 1 and 2 are still out
        for c in asks.values():
            if c.notifier == "console" and c.target.id != "jordan":
                assert await store.claims.dead_letter(c, "gave up", now)
        second = await store.outbox.claim_due(now, LEASE)
    assert [(c.kind, c.notifier) for c in first] == [(NoticeKind.approval_closed, "slack")]
    [close] = first
    assert isinstance(close, ClaimedApproval)
    assert close.messages == ((Posted("C0SEC", "a-1"), JORDAN), (Posted("C0SEC", "a-2"), SECOPS))
    assert (close.approval.id, close.approval.status, close.approval.decided_by, close.target, close.buttons,
            close.attempts) == ("req-1", "approved", "jordan", SECOPS, True, 1)
    assert [(c.kind, c.notifier) for c in second] == [(NoticeKind.approval_closed, "console")]
    assert isinstance(second[0], ClaimedApproval)
    assert second[0].messages == ((Posted("console", "c-1"), JORDAN),)


# -- workers sharing PostgreSQL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("incident_db", ["postgresql"], indirect=True)
async def test_a_claim_skips_the_rows_another_worker_holds_locked_instead_of_waiting_for_them(
    incident_db: str,
) -> None:
    """One row of each kind (a page, a group's refresh, a review digest, an approval ask) held `FOR UPDATE` by
    another connection: the claim returns the unlocked page at once, and takes the four once they are let go.
    PostgreSQL only: SQLite has no row locks."""
    async with rooms_on(incident_db, matrix=POLICY.matrix) as store:
        await store.incidents.record_finding(finding("support-bot-1", "tool.0"), T0)  # a root, and the leader
        await store.incidents.record_finding(finding("support-bot-1", "tool.1"), T0)  # its group's refresh
        await store.incidents.record_finding(finding("billing-agent-1", "tool.0"), T0)  # another root
        await request(store, "req-1", [JORDAN.model_dump(mode="json")])
        await ask(store, "req-1", NoticeKind.approval, JORDAN, ["slack"], level=0)
        async with store.sessions.begin() as s:
            digest = ReviewDigest(responder="finance-ops", period_end=T0, target={"id": "finance-ops"},
                                  summary=summarise([Member(3, "r", None, "a", "t", 1, T0)], until=T0),
                                  created_at=T0)
            s.add(digest)
            await s.flush()
            s.add(Notification(incident_id=None, digest_id=digest.id, notifier="slack", kind="digest",
                               target={"id": "finance-ops"}, status="pending", attempts=0, next_attempt_at=T0,
                               created_at=T0))
        notes = await notifications(store)
        free = [n.id for n in notes if n.incident_id == 3]
        held = [n.id for n in notes if n.incident_id != 3]
        assert {n.kind for n in notes if n.id in held} == {"root", "group", "approval", "digest"}
        async with store.sessions() as other, other.begin():
            locked = (await other.execute(select(Notification).where(Notification.id.in_(held))
                                          .with_for_update())).scalars().all()
            assert len(locked) == 4
            claimed = await without_waiting(other, store.outbox.claim_due(T0, LEASE), "the outbox's claim")
        released = await store.outbox.claim_due(T0, LEASE)
    assert [c.id for c in claimed] == free
    assert sorted(c.id for c in released) == held
