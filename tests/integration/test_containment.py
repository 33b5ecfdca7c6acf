"""The containment engine on a real database (SQLite and PostgreSQL): gates, the ledger, retries, escalation."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import select

from playbooks.engine import ContainmentEngine
from playbooks.ledger import Verdict
from responders.db.models import ContainmentDecision, ContainmentStep, Notification
from responders.incident_responder import IncidentResponder
from responders.incidents import Action, Status, authorise
from responders.store.incidents import Recorded
from responders.store.views import steps_of
from service.runtime.catalogue import CATALOGUE
from service.runtime.settings import Settings
from tests.support.containment_helpers import TELL, containment_policy, engine_on, violation
from tests.support.incident_helpers import FakeClock, eventually, running
from tests.support.matrix_builder import BASE
from tests.support.metrics import metric_value
from tests.support.webhook_receiver import WebhookReceiver
from warden.contract.actors import BREAK_GLASS, Actor
from warden.contract.findings import OwnerRef
from warden.contract.matrix import Matrix, Severity
from warden.policy import Policy, build_policy
from warden.telemetry import metrics

TELL_APPROVER = [{"rules": ["unapproved_tool"], "playbook": "tell", "gate": "approver", "min_severity": "low",
                  "approval_timeout": "10m"}]
TELL_AUTO = [{**TELL_APPROVER[0], "gate": "auto"}]


@asynccontextmanager
async def contained(settings: Settings, policy: Policy, clock: FakeClock, **kw: object
                    ) -> AsyncIterator[tuple[IncidentResponder, ContainmentEngine]]:
    async with running(settings, clock=clock) as responder, aiohttp.ClientSession() as http:
        # the ignore below: kw are engine_on's keyword options (publish, attempts, timeout_s), passed through
        yield responder, engine_on(responder, policy, http, clock=clock, **kw)  # type: ignore[arg-type]


async def steps(responder: IncidentResponder, incident_id: int = 1) -> list[ContainmentStep]:
    async with responder.store.sessions.begin() as s:
        return await steps_of(s, incident_id)


async def kinds(responder: IncidentResponder, incident_id: int = 1) -> list[str]:
    """The timeline's entries, without the deliveries the running outbox adds in its own time."""
    return [e.kind for e in await responder.store.timeline.entries(incident_id) if e.kind != "notified"]


async def notes(responder: IncidentResponder) -> list[str]:
    async with responder.store.sessions.begin() as s:
        return [n.note or "" for n in (await s.execute(select(Notification).order_by(Notification.id))).scalars()]


async def passes_until(engine: ContainmentEngine, responder: IncidentResponder, kind: str) -> None:
    """Engine passes until the timeline has `kind`: on PostgreSQL a pass skips an incident row another loop (the
    running escalator) holds locked at that moment, and takes it on the next pass, as workers do."""

    async def recorded() -> bool:
        await engine.run_due()
        return kind in await kinds(responder)

    await eventually(recorded, timeout=10, what=f"a {kind} timeline entry")


JORDAN = OwnerRef(id="jordan", name="Jordan", contacts={"slack": "U0JORDAN"})


async def test_an_auto_gate_runs_the_playbook_once_and_records_every_move(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_AUTO)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        assert await responder.store.incidents.record_finding(violation(policy), clock()) is Recorded.opened
        [step] = await steps(responder)
        assert (step.status, step.gate, step.decided_by) == ("approved", "auto", "warden")
        assert await engine.run_due() >= 1
        [step] = await steps(responder)
        assert step.status == "done" and step.detail["to"] == "marco" and step.ended_at is not None
        await engine.run_due()  # nothing left to run: a done step never runs again
        told = [n for n in await notes(responder) if n == "contained"]
        assert len(told) == len(responder.store.notifiers)  # one per notifier, once
        assert "Quarantine released." not in await notes(responder)  # only a release step says so
        assert await kinds(responder) == ["opened", "containment_proposed", "containment_step_done"]


async def test_an_approver_gate_waits_for_the_named_approver(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_APPROVER)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        await engine.run_due()
        assert [s.status for s in await steps(responder)] == ["proposed"]
        view = await responder.store.incidents.incident(1)
        assert view is not None and view.awaiting_approval
        assert await responder.store.decisions.decide(1, "approve", owner=JORDAN, by=Actor("slack", "U0JORDAN"),
                                                      note="ok",
                                                      now=clock())
        await engine.run_due()
        [step] = await steps(responder)
        assert (step.status, step.decided_by) == ("done", "jordan")
        entries = await responder.store.timeline.entries(1)
        approved = next(e for e in entries if e.kind == "containment_steps_approved")
        assert (approved.actor, approved.identity) == ("jordan", "U0JORDAN")
        async with responder.store.sessions.begin() as s:
            decision = (await s.execute(select(ContainmentDecision))).scalar_one()
            assert decision.consumed_at is not None


async def test_a_denial_stops_the_playbook(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_APPROVER)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        denied_before = metric_value(metrics.CONTAINMENT_ACTIONS, action="*", outcome="denied")
        assert await responder.store.decisions.decide(1, "deny", owner=JORDAN, by=Actor("slack", "U0JORDAN"), note="no",
                                                      now=clock())
        await engine.run_due()
        clock.advance(hours=1)
        await engine.run_due()
        [step] = await steps(responder)
        assert step.status == "denied" and step.ended_at is not None
        assert "contained" not in await notes(responder)
        assert metric_value(metrics.CONTAINMENT_ACTIONS, action="*", outcome="denied") == denied_before + 1


@pytest.mark.parametrize("owner_id", ["marco", "jordan"])  # not an approver; the approver, but not his Slack user
async def test_a_decision_not_from_the_approver_is_refused_when_it_is_consumed(incident_settings: Settings,
                                                                              owner_id: str) -> None:
    """The click handler already refuses other users; the engine checks again, against the owners frozen on the
    incident, so a decision row written some other way cannot run a playbook."""
    clock = FakeClock()
    policy = containment_policy(TELL_APPROVER)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        async with responder.store.sessions.begin() as s:
            s.add(ContainmentDecision(incident_id=1, decision="approve", owner_id=owner_id, notifier="slack",
                                      address="", user_id="U0MARCO",
                                      at=clock()))
        verdicts, _, _ = await engine.ledger.gate(clock())
        assert verdicts == [Verdict(1, "approve", honoured=False, steps=0)]
        assert [s.status for s in await steps(responder)] == ["proposed"]
        refused = [e for e in await responder.store.timeline.entries(1) if e.kind == "refused"]
        assert refused and refused[0].actor == owner_id
        assert "not from an owner who may approve" in refused[0].detail["reason"]


async def test_an_approval_given_with_the_cli_is_honoured(incident_settings: Settings) -> None:
    """`warden incident approve --as jordan --database-url ...` records the decision as `break-glass:<who ran it>`:
    the owner was checked when the command ran, so no notifier identity is asked for."""
    clock = FakeClock()
    policy = containment_policy(TELL_APPROVER)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        assert await responder.store.decisions.decide(1, "approve", owner=JORDAN, by=Actor(BREAK_GLASS, "ops-laptop"),
                                                      note="ok",
                                                      now=clock())
        assert (await engine.ledger.gate(clock()))[0] == [Verdict(1, "approve", honoured=True, steps=1)]
        assert [s.status for s in await steps(responder)] == ["approved"]


@pytest.mark.parametrize(("user", "honoured"), [("29:jordan", True), ("29:mallory", False), ("U0JORDAN", False)])
async def test_an_approver_reached_through_another_notifier_is_checked_against_the_matrix(
        incident_settings: Settings, user: str, honoured: bool) -> None:
    """No notifier is special: a decision that came through a notifier other than Slack (here one named `teams`) is
    honoured when the matrix names its user as the approver's contact on that notifier, and refused otherwise (another
    user, or the approver's Slack id presented as a teams user)."""
    clock = FakeClock()
    doc = copy.deepcopy(BASE)
    doc["owners"]["jordan"]["contacts"]["teams"] = "29:jordan"
    doc["playbooks"], doc["playbook_definitions"] = TELL_APPROVER, dict(TELL)
    policy = build_policy(Matrix.model_validate(doc), CATALOGUE, sha256="sha-teams")
    jordan = OwnerRef(id="jordan", name="Jordan", contacts={"slack": "U0JORDAN", "teams": "29:jordan"})
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        assert await responder.store.decisions.decide(1, "approve", owner=jordan, by=Actor("teams", user, "19:ops"),
                                                      note="ok", now=clock())
        verdicts, _, _ = await engine.ledger.gate(clock())
        assert verdicts == [Verdict(1, "approve", honoured=honoured, steps=1 if honoured else 0)]
        assert [s.status for s in await steps(responder)] == ["approved" if honoured else "proposed"]
        [decided] = [e for e in await responder.store.timeline.entries(1)
                     if e.kind in {"containment_steps_approved", "refused"}]
    assert decided.kind == ("containment_steps_approved" if honoured else "refused")
    assert decided.via == Actor("teams", user, "19:ops") and decided.identity == f"teams:{user}"


async def test_an_approval_not_given_in_time_climbs_to_the_next_owner_who_approves(
        incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_APPROVER, escalation=[
        {"owner": "iam-team", "ack_timeout": "5m"}, {"owner": "ciso", "ack_timeout": "10m", "approves": True}])
    ciso = OwnerRef(id="ciso", name="CISO", contacts={"slack": "U0CISO"})
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        view = await responder.store.incidents.incident(1)
        assert view is not None
        assert authorise(Action.approve, view.owners, "slack", "U0CISO", view.approval_level) is None
        clock.advance(minutes=9)
        await engine.run_due()
        assert "approval_escalated" not in await kinds(responder)
        clock.advance(minutes=1)  # exactly the approval timeout
        await passes_until(engine, responder, "approval_escalated")
        view = await responder.store.incidents.incident(1)
        assert view is not None and view.approval_level == 1
        assert authorise(Action.approve, view.owners, "slack", "U0CISO", view.approval_level) == view.owners.escalation[
            1].owner
        escalated = [e for e in await responder.store.timeline.entries(1) if e.kind == "approval_escalated"]
        assert escalated[0].detail["to"] == "ciso"
        assert any("not approved within 600s by Jordan" in n for n in await notes(responder))
        await engine.run_due()
        clock.advance(minutes=9)
        await engine.run_due()  # the new approver has the whole timeout again
        assert "approval_unanswered" not in await kinds(responder)
        clock.advance(minutes=2)  # nobody further up approves: the steps keep waiting, and that is recorded
        await passes_until(engine, responder, "approval_unanswered")
        assert [s.status for s in await steps(responder)] == ["proposed"]
        assert await responder.store.decisions.decide(1, "approve", owner=ciso, by=Actor("slack", "U0CISO"), note="ok",
                                                      now=clock())
        await engine.run_due()
        assert [s.status for s in await steps(responder)] == ["done"]


async def test_a_dry_run_records_what_it_would_do_and_does_nothing(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_AUTO, {"tell": {"dry_run": True, "steps": [
        {"action": "notify", "params": {"role": "business_owner", "message": "contained"}}]}})
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        await engine.run_due()
        [step] = await steps(responder)
        assert step.status == "dry_run" and step.detail["does"] == "notify the business_owner"
        assert "contained" not in await notes(responder)


async def test_a_closed_incident_cancels_the_steps_waiting_for_an_approval(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_APPROVER)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        iam = OwnerRef(id="iam-team", kind="team")
        assert await responder.store.incidents.transition(1, Status.open, Status.false_positive, owner=iam,
                                                          by=Actor("slack", "U1"),
                                                          note="fp", now=clock())
        clock.advance(minutes=11)  # past the approval timeout too: a closed incident's approval never climbs
        await engine.run_due()
        [step] = await steps(responder)
        assert step.status == "cancelled"
        assert not {"approval_escalated", "approval_unanswered"} & set(await kinds(responder))  # nothing chased
        assert not await responder.store.decisions.decide(1, "approve", owner=JORDAN, by=Actor("slack", "U0JORDAN"),
                                                          note="late",
                                                          now=clock())


async def test_findings_without_a_binding_propose_nothing_and_offer_no_approval(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy([{**TELL_APPROVER[0], "min_severity": "critical"}])  # the finding is only high
    async with contained(incident_settings, policy, clock) as (responder, _engine):
        finding = violation(policy)
        assert finding.severity.value == "high" and finding.containment == []
        await responder.store.incidents.record_finding(finding, clock())
        view = await responder.store.incidents.incident(1)
        assert view is not None and view.containment == () and not view.awaiting_approval
        assert view.containment_status == "no playbook bound to this finding"
        assert not await responder.store.decisions.decide(1, "approve", owner=JORDAN, by=Actor("slack", "U0JORDAN"),
                                                          note="x",
                                                          now=clock())


@pytest.mark.parametrize(("severity", "gate"), [("critical", "auto"), ("high", "approver")])
def test_auto_if_critical_resolves_per_finding(severity: str, gate: str) -> None:
    policy = containment_policy([{**TELL_APPROVER[0], "gate": "auto_if_critical"}])
    [plan] = policy.plans_for("unapproved_tool", Severity(severity), "provisioner")
    assert plan.gate.value == gate


def test_a_binding_applies_from_its_min_severity_up() -> None:
    policy = containment_policy([{**TELL_APPROVER[0], "min_severity": "high"}])
    assert [p.playbook for p in policy.plans_for("unapproved_tool", Severity.high, "provisioner")] == ["tell"]
    assert [p.playbook for p in policy.plans_for("unapproved_tool", Severity.critical, "provisioner")] == ["tell"]
    assert policy.plans_for("unapproved_tool", Severity.medium, "provisioner") == []
    assert policy.plans_for("tool_burst", Severity.critical, "provisioner") == []  # not one of its rules


def test_a_plan_is_frozen_into_the_finding_with_the_risk_tiers_it_was_bound_for() -> None:
    bound = containment_policy([{**TELL_APPROVER[0], "risk": ["critical"]}])
    assert [p.playbook for p in violation(bound).containment] == ["tell"]
    other_tier = containment_policy([{**TELL_APPROVER[0], "risk": ["low"]}])
    assert violation(other_tier).containment == []
    # An agent no workflow lists has no risk tier: only bindings for every tier apply to it.
    assert other_tier.plans_for("unapproved_tool", Severity.critical, None) == []
    assert [p.playbook for p in bound.plans_for("unowned_agent", Severity.critical, None)] == []


HOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WebhookReceiver]:
    """A Standard Webhooks receiver whose signing secret the policy names as env:WARDEN_TEST_HOOK_SECRET."""
    monkeypatch.setenv("WARDEN_TEST_HOOK_SECRET", HOOK_SECRET)
    started = await WebhookReceiver(HOOK_SECRET).start()
    try:
        yield started
    finally:
        await started.stop()


def hook_then_tell(url: str, on_failure: str) -> dict[str, object]:
    return {"hook": {"on_failure": on_failure, "steps": [
        {"action": "webhook", "params": {"url": url, "secret": "env:WARDEN_TEST_HOOK_SECRET"}},
        {"action": "notify", "params": {"role": "business_owner", "message": "contained"}}]}}


async def test_a_hook_down_then_up_is_delivered_by_a_retry_with_the_same_id(
        incident_settings: Settings, receiver: WebhookReceiver) -> None:
    await receiver.down()
    clock = FakeClock()
    policy = containment_policy([{**TELL_AUTO[0], "playbook": "hook"}], hook_then_tell(receiver.url, "escalate"))
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        await engine.run_due()
        [hook, tell] = await steps(responder)
        assert (hook.status, hook.attempts, tell.status) == ("approved", 1, "approved")  # tell waits its turn
        assert hook.last_error and "connect" in hook.last_error.lower()
        await receiver.up()
        await engine.run_due()  # not due yet: the backoff holds the retry
        assert receiver.accepted_ids == []
        clock.advance(seconds=1)
        await engine.run_due()
        await engine.run_due()
        assert [s.status for s in await steps(responder)] == ["done", "done"]
        assert receiver.accepted_ids == ["warden-1-hook-0"]
        assert [k for k in await kinds(responder) if k.startswith("containment_step")] == [
            "containment_step_retry", "containment_step_done", "containment_step_done"]


async def test_a_hook_down_for_good_fails_and_alerts_the_responder_chain(
        incident_settings: Settings, receiver: WebhookReceiver) -> None:
    await receiver.down()
    clock = FakeClock()
    policy = containment_policy([{**TELL_AUTO[0], "playbook": "hook"}], hook_then_tell(receiver.url, "escalate"))
    failed_before = metric_value(metrics.CONTAINMENT_ACTIONS, action="webhook", outcome="failed")
    async with contained(incident_settings, policy, clock, attempts=2) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        await engine.run_due()
        clock.advance(seconds=1)
        await engine.run_due()
        [hook, tell] = await steps(responder)
        assert (hook.status, hook.attempts, tell.status) == ("failed", 2, "cancelled")
        alerts = [n for n in await notes(responder) if n.startswith("Containment failed")]
        # The responder (iam-team) and the rest of its escalation chain (ciso): iam-team is on it once.
        async with responder.store.sessions.begin() as s:
            targets = {n.target["id"] for n in (await s.execute(select(Notification))).scalars()
                       if (n.note or "").startswith("Containment failed")}
        assert targets == {"iam-team", "ciso"} and alerts
        assert "playbook hook step 1 (webhook) after 2 attempt(s)" in alerts[0] and "Not run: notify" in alerts[0]
        failed = next(e for e in await responder.store.timeline.entries(1) if e.kind == "containment_step_failed")
        assert failed.detail["cancelled"] == ["notify"] and failed.detail["on_failure"] == "escalate"
    assert metric_value(metrics.CONTAINMENT_ACTIONS, action="webhook", outcome="failed") == failed_before + 1


async def test_on_failure_continue_runs_the_next_step_anyway(
        incident_settings: Settings, receiver: WebhookReceiver) -> None:
    receiver.status = 400  # a 4xx: no retry can help
    clock = FakeClock()
    policy = containment_policy([{**TELL_AUTO[0], "playbook": "hook"}], hook_then_tell(receiver.url, "continue"))
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        await engine.run_due()
        # The next step waits for the failed one to be over, even under `continue`: never run side by side.
        assert [(s.status, s.attempts) for s in await steps(responder)] == [("failed", 1), ("approved", 0)]
        await engine.run_due()
        assert [(s.status, s.attempts) for s in await steps(responder)] == [("failed", 1), ("done", 1)]
        assert "contained" in await notes(responder)


async def test_a_step_a_crashed_worker_left_executing_is_claimed_again_at_once_after_its_leases_are_released(
        incident_settings: Settings) -> None:
    """The SQLite start-up path: no other worker shares the database, so the leases of the last run are let go and
    the step it was running is claimed again straight away, marked as resumed."""
    clock = FakeClock()
    policy = containment_policy(TELL_AUTO)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        [first] = await engine.ledger.claim(clock(), timedelta(minutes=5))
        assert (first.resumed, first.attempts, first.key) == (False, 1, "warden-1-tell-0")
        assert "sealed-x" not in repr(replace(first, sealed_token="sealed-x"))  # a claimed step never shows it
        assert await engine.ledger.claim(clock(), timedelta(minutes=5)) == []  # leased: nobody else takes it
        assert await engine.ledger.release_leases() == 1
        [again] = await engine.ledger.claim(clock(), timedelta(minutes=5))
        assert (again.id, again.resumed, again.attempts) == (first.id, True, 2) and again.claim != first.claim
        # The first run's claim is gone: whatever it reports is not recorded.
        assert await engine.ledger.done(first, {}, clock()) is False
        assert await engine.ledger.retry(first, "x", clock(), clock()) is False
        assert await engine.ledger.fail(first, "x", clock()) is False
        assert await engine.ledger.retry(again, "timeout", clock() + timedelta(seconds=5), clock()) is True
        assert await engine.ledger.claim(clock() + timedelta(seconds=4), timedelta(minutes=5)) == []  # not due
        [third] = await engine.ledger.claim(clock() + timedelta(seconds=5), timedelta(minutes=5))
        assert (third.resumed, third.attempts) == (False, 3)
        clock.advance(seconds=5, minutes=5)  # exactly when the lease ends, another worker may take the step over
        [fourth] = await engine.ledger.claim(clock(), timedelta(minutes=5))
        assert (fourth.resumed, fourth.attempts) == (True, 4)
        assert await engine.ledger.done(fourth, {"to": "marco"}, clock()) is True
        assert await engine.ledger.fail(fourth, "late", clock()) is False  # done is final
        [step] = await steps(responder)
        assert (step.status, step.claim, step.claimed_until, step.last_error) == ("done", None, None, None)


async def test_a_claim_takes_at_most_its_limit_of_due_steps(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_AUTO)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        await responder.store.incidents.record_finding(violation(policy, name="net.scan"), clock())
        assert len(await engine.ledger.claim(clock(), timedelta(minutes=5), limit=1)) == 1
        assert len(await engine.ledger.claim(clock(), timedelta(minutes=5), limit=1)) == 1
        assert await engine.ledger.claim(clock(), timedelta(minutes=5), limit=1) == []


async def test_a_notification_step_is_recorded_once_however_often_it_runs(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_AUTO)
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())
        assert await engine.ledger.notify_once("warden-1-tell-0", 1, JORDAN, "once", clock()) is True
        assert await engine.ledger.notify_once("warden-1-tell-0", 1, JORDAN, "once", clock()) is False
        assert (await notes(responder)).count("once") == len(responder.store.notifiers)


async def test_an_approval_climbs_through_every_escalation_step_that_approves(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(TELL_APPROVER, escalation=[
        {"owner": "iam-team", "ack_timeout": "5m", "approves": True},
        {"owner": "ciso", "ack_timeout": "10m", "approves": True}])
    async with contained(incident_settings, policy, clock) as (responder, engine):
        await responder.store.incidents.record_finding(violation(policy), clock())

        async def escalated() -> list[str]:
            return [e.detail["to"] for e in await responder.store.timeline.entries(1) if e.kind == "approval_escalated"]

        for n, to in enumerate(("iam-team", "ciso"), start=1):
            clock.advance(minutes=10)

            async def climbed(n: int = n) -> bool:
                await engine.run_due()
                return len(await escalated()) == n

            await eventually(climbed, timeout=10, what=f"the approval climbing to {to}")
            assert (await escalated())[-1] == to
        clock.advance(minutes=10)
        await passes_until(engine, responder, "approval_unanswered")
        assert await escalated() == ["iam-team", "ciso"]
