"""The escalation room: a page moves one step along its frozen chain when its deadline passes, never twice."""

from __future__ import annotations

from datetime import timedelta

from responders.incidents import Status
from tests.support.incident_helpers import finding
from tests.support.store_rooms import T0, incident_row, notifications, rooms_on
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef

FINANCE_OPS = OwnerRef(id="finance-ops")


async def test_only_open_pages_past_their_deadline_are_due_oldest_deadline_first(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", "tool.a"), T0 + timedelta(minutes=1))
        await store.incidents.record_finding(finding("billing-agent-1", "tool.b"), T0)
        await store.incidents.record_finding(finding("billing-agent-1", "tool.c"), T0)
        assert await store.incidents.transition(3, Status.open, Status.acknowledged, owner=FINANCE_OPS,
                                                by=Actor("slack", "U0KAI"), note="mine", now=T0)
        assert await store.escalations.due_escalations(T0 + timedelta(minutes=10)) == [2], "the chain's 10 m step"
        assert await store.escalations.due_escalations(T0 + timedelta(minutes=11)) == [2, 1]
        assert await store.escalations.due_escalations(T0 + timedelta(minutes=9, seconds=59)) == []


async def test_an_escalation_asks_the_next_owner_once_and_its_deadline_counts_from_now(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)  # finance-ops 10m, secops 20m, ciso 30m
        assert await store.escalations.escalate(1, T0 + timedelta(minutes=9)) is None, "not due yet"
        late = T0 + timedelta(minutes=12)
        assert await store.escalations.escalate(1, late) == 1
        assert await store.escalations.escalate(1, late) is None, "escalated already: its deadline moved on"
        row = await incident_row(store, 1)
        escalations = [n for n in await notifications(store) if n.kind == "escalation"]
        [entry] = [e for e in await store.timeline.entries(1) if e.kind == "escalated"]
    assert (row.escalation_step, row.escalate_at) == (1, late + timedelta(minutes=20))
    assert [n.target["id"] for n in escalations] == ["secops"]
    assert entry.detail["step"] == 1 and entry.detail["to"] == "secops"


async def test_the_end_of_the_chain_is_recorded_and_nobody_more_is_asked(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        now = T0
        steps = []
        for _ in range(3):
            now += timedelta(hours=1)
            steps.append(await store.escalations.escalate(1, now))
        row = await incident_row(store, 1)
        kinds = [e.kind for e in await store.timeline.entries(1)]
        asked = [n.target["id"] for n in await notifications(store) if n.kind == "escalation"]
    assert steps == [1, 2, None]
    assert kinds.count("escalated") == 2 and kinds.count("escalation_exhausted") == 1
    assert asked == ["secops", "ciso"] and row.escalation_step == 2


async def test_an_acknowledged_page_does_not_escalate(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        assert await store.incidents.transition(1, Status.open, Status.acknowledged, owner=FINANCE_OPS,
                                                by=Actor("slack", "U0KAI"), note="mine", now=T0)
        assert await store.escalations.due_escalations(T0 + timedelta(hours=1)) == []
        assert await store.escalations.escalate(1, T0 + timedelta(hours=1)) is None
        assert (await incident_row(store, 1)).escalation_step == 0


async def test_a_page_escalates_at_its_deadline_exactly_as_due_escalations_lists_it(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)  # finance-ops has 10 minutes
        deadline = T0 + timedelta(minutes=10)
        assert await store.escalations.due_escalations(deadline) == [1]
        assert await store.escalations.escalate(1, deadline) == 1
