"""The decisions room: the ledger a finding proposes, one decision per incident, a release only of a quarantine."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta

from sqlalchemy import update

from responders.db.models import ContainmentStep
from responders.incidents import Status, StepStatus
from responders.store.common import RELEASE, WARDEN
from responders.store.views import steps_of
from tests.support.containment_helpers import containment_policy, violation
from tests.support.store_rooms import T0, incident_row, notifications, rooms_on
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef

GATED = [{"rules": ["unapproved_tool"], "playbook": "tell", "gate": "approver", "min_severity": "low",
          "approval_timeout": "10m"}]
AUTO = [{**GATED[0], "gate": "auto"}]
JORDAN = OwnerRef(id="jordan", name="Jordan")
IAM_TEAM = OwnerRef(id="iam-team")


async def test_an_approver_gate_is_proposed_and_due_by_its_timeout_an_auto_one_approved_by_warden(
    incident_db: str,
) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(violation(containment_policy(GATED)), T0)
        await store.incidents.record_finding(violation(containment_policy(AUTO), name="net.scan"), T0)
        gated, auto = await incident_row(store, 1), await incident_row(store, 2)
        async with store.sessions() as s:
            waiting, approved = await steps_of(s, 1), await steps_of(s, 2)
        proposed = [e for e in await store.timeline.entries(1) if e.kind == "containment_proposed"]
    assert [(st.status, st.decided_by) for st in waiting] == [(StepStatus.proposed.value, None)]
    assert [(st.status, st.decided_by) for st in approved] == [(StepStatus.approved.value, WARDEN)]
    assert gated.approval_due_at == T0 + timedelta(minutes=10) and auto.approval_due_at is None
    assert proposed[0].detail["gate"] == "approver" and proposed[0].detail["steps"] == ["notify"]


async def test_a_decision_is_taken_once_and_only_while_a_step_waits_for_one(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(violation(containment_policy(GATED)), T0)
        await store.incidents.record_finding(violation(containment_policy(AUTO), name="net.scan"), T0)
        assert await store.decisions.decide(2, "approve", owner=JORDAN, by=Actor("slack", "U0J"), note="x",
                                            now=T0) is False, "an auto step waits for nobody"
        assert await store.decisions.decide(99, "approve", owner=JORDAN, by=Actor("slack", "U0J"), note="x",
                                            now=T0) is False
        before = len(await notifications(store))
        assert await store.decisions.decide(1, "approve", owner=JORDAN, by=Actor("slack", "U0J"), note="ok", now=T0)
        assert await store.decisions.decide(1, "deny", owner=JORDAN, by=Actor("slack", "U0J"), note="no",
                                            now=T0) is False
        view = await store.incidents.incident(1)
        updates = [n for n in (await notifications(store))[before:] if n.kind == "update"]
        kinds = [e.kind for e in await store.timeline.entries(1)]
    assert view is not None and view.decision is not None
    assert (view.decision.decision, view.decision.owner_id) == ("approve", "jordan")
    assert kinds.count("containment_approve") == 1 and "containment_deny" not in kinds
    assert [n.note for n in updates] == ["ok"]


async def test_a_closed_incident_takes_no_decision(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(violation(containment_policy(GATED)), T0)
        assert await store.incidents.transition(1, Status.open, Status.resolved, owner=IAM_TEAM, by=Actor("slack",
                                                                                                          "U0I"),
                                                note="done", now=T0)
        assert await store.decisions.decide(1, "approve", owner=JORDAN, by=Actor("slack", "U0J"), note="ok",
                                            now=T0) is False


async def test_a_release_is_recorded_once_and_only_for_a_quarantine_in_effect(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(violation(containment_policy(AUTO)), T0)
        def ask(incident_id: int) -> Awaitable[bool]:
            return store.decisions.request_release(incident_id, owner=JORDAN, via="cli", identity="tester", now=T0)
        assert await ask(1) is False, "no quarantine: nothing to release"
        assert await ask(99) is False
        async with store.sessions.begin() as s:  # the ledger's step quarantined the agent
            await s.execute(update(ContainmentStep).where(ContainmentStep.incident_id == 1).values(
                action="quarantine_agent", status=StepStatus.done.value))
        assert await ask(1)
        assert await ask(1) is False, "a release is recorded already"
        notes = [n.note for n in await notifications(store) if n.kind == "update"]
        async with store.sessions() as s:
            release = [st for st in await steps_of(s, 1) if st.action == RELEASE]
        [entry] = [e for e in await store.timeline.entries(1) if e.kind == "release_requested"]
    assert [(st.status, st.decided_by, st.dry_run, st.detail) for st in release] == [
        (StepStatus.approved.value, "jordan", False, {"via": "cli", "identity": "tester"})], "a release really runs"
    assert notes == ["Quarantine release requested by Jordan (cli)."]
    assert entry.identity is None and entry.actor == "jordan", "an identity is a Slack user only via slack"


async def test_refusals_and_what_containment_did_are_read_back(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(violation(containment_policy(AUTO)), T0)
        await store.decisions.record_refusal(1, "approve", Actor("slack", "U0EVE"), "not an approver", T0)
        assert await store.decisions.step_counts(T0) == {StepStatus.approved.value: 1}
        assert await store.decisions.step_counts(T0 + timedelta(seconds=1)) == {}
        assert await store.decisions.contained_incidents(T0) == []
        async with store.sessions.begin() as s:
            await s.execute(update(ContainmentStep).values(status=StepStatus.done.value))
        assert await store.decisions.contained_incidents(T0) == [1]
        [refused] = [e for e in await store.timeline.entries(1) if e.kind == "refused"]
    assert (refused.actor, refused.identity) == ("unauthorised", "U0EVE")
    assert refused.detail == {"action": "approve", "reason": "not an approver"}


async def test_a_release_by_an_owner_without_a_name_is_told_by_their_id(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(violation(containment_policy(AUTO)), T0)
        async with store.sessions.begin() as s:  # the ledger's step quarantined the agent
            await s.execute(update(ContainmentStep).where(ContainmentStep.incident_id == 1).values(
                action="quarantine_agent", status=StepStatus.done.value))
        assert await store.decisions.request_release(1, owner=IAM_TEAM, via="api", identity="api:0123", now=T0)
        notes = [n.note for n in await notifications(store) if n.kind == "update"]
    assert notes == ["Quarantine release requested by iam-team (api)."]
