"""Workers sharing PostgreSQL: each locked query of the ledger skips a row another worker holds, instead of waiting.

Every test here holds one row locked from a second connection (a transaction that did `SELECT … FOR UPDATE`, as a
worker in the middle of its pass does), calls the ledger, and asserts that the call returns without that row and
with the unlocked one, never waiting on the lock; then lets the lock go and shows the row is taken. PostgreSQL only:
SQLite has no row locks (it ignores `FOR UPDATE`), so the mutation script's pure run cannot see this behaviour.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from playbooks.ledger import Ledger, Verdict
from responders.db import make_engine, migrate
from responders.db.models import ContainmentDecision, ContainmentStep, Incident
from responders.incidents import Status
from responders.store.incidents import Recorded
from responders.store.rooms import Store
from responders.store.views import steps_of
from tests.support.containment_helpers import containment_policy, violation
from tests.support.incident_helpers import FakeClock
from tests.support.row_locks import without_waiting
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef

pytestmark = pytest.mark.parametrize("incident_db", ["postgresql"], indirect=True)


APPROVER = [{"rules": ["unapproved_tool"], "playbook": "tell", "gate": "approver", "min_severity": "low",
             "approval_timeout": "10m"}]
AUTO = [{**APPROVER[0], "gate": "auto"}]
JORDAN = OwnerRef(id="jordan", name="Jordan", contacts={"slack": "U0JORDAN"})
@asynccontextmanager
async def ledger_on(url: str, bindings: list[dict[str, Any]], **workflow_changes: Any
                    ) -> AsyncIterator[tuple[Ledger, FakeClock, Store]]:
    """A ledger on a migrated database with two incidents opened (ids 1 and 2, different tools), no loops running:
    nothing but the test and its second connection touches the rows."""
    engine = make_engine(url)
    try:
        await migrate(engine)
        store = Store.build(engine, ["slack"])
        clock = FakeClock()
        policy = containment_policy(bindings, **workflow_changes)
        for tool in ("shell.exec", "net.scan"):
            assert await store.incidents.record_finding(violation(policy, name=tool), clock()) is Recorded.opened
        yield Ledger(store), clock, store
    finally:
        await engine.dispose()


@asynccontextmanager
async def locked_by_another_worker(ledger: Ledger, row: Select[Any]) -> AsyncIterator[AsyncSession]:
    """A second connection's transaction holding `row` locked `FOR UPDATE` until the block ends (then rolled back)."""
    async with ledger.sessions() as other, other.begin():
        assert (await other.execute(row.with_for_update())).scalars().one() is not None
        yield other


async def status_of_step(ledger: Ledger, incident_id: int) -> str:
    async with ledger.sessions.begin() as s:
        [step] = await steps_of(s, incident_id)
        return step.status


async def approval_level(store: Store, incident_id: int) -> int:
    view = await store.incidents.incident(incident_id)
    assert view is not None
    return view.approval_level


async def test_a_gate_skips_a_decision_another_worker_holds_and_consumes_it_once_released(incident_db: str) -> None:
    async with ledger_on(incident_db, APPROVER) as (ledger, clock, store):
        for incident_id in (1, 2):
            assert await store.decisions.decide(incident_id, "approve", owner=JORDAN, by=Actor("slack", "U0JORDAN"),
                                                note="ok",
                                                now=clock())
        held = select(ContainmentDecision).where(ContainmentDecision.incident_id == 1)
        async with locked_by_another_worker(ledger, held) as other:
            verdicts, _, _ = await without_waiting(other, ledger.gate(clock()), "the gate's decisions")
            assert verdicts == [Verdict(2, "approve", honoured=True, steps=1)]
        assert [await status_of_step(ledger, i) for i in (1, 2)] == ["proposed", "approved"]
        verdicts, _, _ = await ledger.gate(clock())
        assert verdicts == [Verdict(1, "approve", honoured=True, steps=1)]
        assert await status_of_step(ledger, 1) == "approved"


async def test_a_gate_skips_an_incident_another_worker_holds_when_approvals_climb_and_climbs_it_once_released(
        incident_db: str) -> None:
    chain = [{"owner": "iam-team", "ack_timeout": "5m"}, {"owner": "ciso", "ack_timeout": "10m", "approves": True}]
    async with ledger_on(incident_db, APPROVER, escalation=chain) as (ledger, clock, store):
        clock.advance(minutes=10)  # both approvals are due
        async with locked_by_another_worker(ledger, select(Incident).where(Incident.id == 1)) as other:
            _, climbed, _ = await without_waiting(other, ledger.gate(clock()), "the gate's approval timeouts")
            assert climbed == [2]
        assert [await approval_level(store, i) for i in (1, 2)] == [0, 1]
        _, climbed, _ = await ledger.gate(clock())
        assert climbed == [1]
        assert await approval_level(store, 1) == 1


async def test_a_gate_skips_a_step_another_worker_holds_when_closed_incidents_cancel_and_cancels_it_once_released(
        incident_db: str) -> None:
    async with ledger_on(incident_db, APPROVER) as (ledger, clock, store):
        iam = OwnerRef(id="iam-team", kind="team")
        for incident_id in (1, 2):
            assert await store.incidents.transition(incident_id, Status.open, Status.false_positive, owner=iam,
                                                    by=Actor("slack", "U1"), note="fp", now=clock())
        held = select(ContainmentStep).where(ContainmentStep.incident_id == 1)
        async with locked_by_another_worker(ledger, held) as other:
            _, _, cancelled = await without_waiting(other, ledger.gate(clock()), "the gate's cancellations")
            assert cancelled == 1
        assert [await status_of_step(ledger, i) for i in (1, 2)] == ["proposed", "cancelled"]
        assert (await ledger.gate(clock()))[2] == 1
        assert await status_of_step(ledger, 1) == "cancelled"


async def test_a_claim_skips_a_step_another_worker_holds_and_takes_it_once_released(incident_db: str) -> None:
    async with ledger_on(incident_db, AUTO) as (ledger, clock, _store):
        held = select(ContainmentStep).where(ContainmentStep.incident_id == 1)
        async with locked_by_another_worker(ledger, held) as other:
            claimed = await without_waiting(other, ledger.claim(clock(), timedelta(minutes=5)), "a claim")
            assert [c.incident.id for c in claimed] == [2]
        [claimed_after] = await ledger.claim(clock(), timedelta(minutes=5))
        assert claimed_after.incident.id == 1
        assert [await status_of_step(ledger, i) for i in (1, 2)] == ["executing", "executing"]
