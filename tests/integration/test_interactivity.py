"""Slack's buttons: signed requests only, once, answered at once; only the incident's named owners may act."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import select

from responders.db.models import ContainmentDecision, ContainmentStep, SecurityEvent
from responders.incident_responder import IncidentResponder
from responders.incidents import Action, Status
from responders.notifiers.slack.interactivity import PATH, Interactivity
from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import Settings
from service.runtime.web import WebServer
from tests.conftest import SLACK_SIGNING_SECRET
from tests.support.incident_helpers import POLICY, block_actions, eventually, finding, running, signed
from tests.support.metrics import metric_value
from warden.contract.matrix import Severity
from warden.telemetry import metrics


@pytest.fixture
async def billing_incident(incident_settings: Settings, slack_api: SlackApiServer) -> AsyncIterator[
        tuple[IncidentResponder, str, int]]:
    """A running responder with its interactivity route served, and one delivered billing-agent incident."""
    async with running(incident_settings) as responder:
        web = WebServer("127.0.0.1", 0, responder.route_installers())
        await web.start()
        try:
            # A playbook waits for the approver: the bundled policy's refund hook (a dry run), bound here.
            plans = POLICY.plans_for("large-refund", Severity.high, "billing-agent")
            assert [p.gate.value for p in plans] == ["approver"]
            await responder.handle(finding("billing-agent-1", "shell.exec").model_copy(update={"containment": plans}))
            await eventually(slack_api.roots, what="the root message")
            yield responder, f"http://127.0.0.1:{web.port}{PATH}", 1
        finally:
            await web.stop()


async def click(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status


async def status_of(responder: IncidentResponder, incident_id: int) -> Status:
    incident = await responder.store.incidents.incident(incident_id)
    assert incident is not None
    return incident.status


async def test_only_a_fresh_correctly_signed_request_is_acted_on_once(
    billing_incident: tuple[IncidentResponder, str, int]
) -> None:
    responder, url, incident_id = billing_incident
    body = block_actions(incident_id, Action.acknowledge.value, "U0TOMAS")  # a finance-ops member
    stale_at = int(time.time()) - 301
    assert await click(url, body, signed("not-the-signing-secret", body)) == 401  # forged
    assert await click(url, body, signed(SLACK_SIGNING_SECRET, body, stale_at)) == 401  # stale
    assert await click(url, body, {"Content-Type": "application/x-www-form-urlencoded"}) == 401  # unsigned
    assert await status_of(responder, incident_id) is Status.open
    valid = signed(SLACK_SIGNING_SECRET, body)
    assert await click(url, body, valid) == 200
    assert await click(url, body, valid) == 409  # the same signed request again: a replay
    garbage = b"payload=%7Bnot-json"
    assert await click(url, garbage, signed(SLACK_SIGNING_SECRET, garbage)) == 400
    assert responder.interactivity is not None
    await responder.interactivity.drain()
    assert await status_of(responder, incident_id) is Status.acknowledged
    kinds = [e.kind for e in await responder.store.timeline.entries(incident_id)]
    assert kinds.count("acknowledged") == 1
    async with responder.store.sessions() as s:  # each refusal is on the audit record, without its body
        refused = list((await s.execute(select(SecurityEvent).order_by(SecurityEvent.id))).scalars())
    assert [(e.source, e.kind, e.detail["status"]) for e in refused] == [
        ("slack_interaction", "forged", 401), ("slack_interaction", "stale", 401),
        ("slack_interaction", "stale", 401), ("slack_interaction", "replayed", 409),
        ("slack_interaction", "malformed", 400)]
    assert refused[1].detail["request_timestamp"] == str(stale_at)
    assert "payload" not in str([e.detail for e in refused]) and "U0TOMAS" not in str([e.detail for e in refused])


async def test_the_named_owners_acknowledge_decide_and_resolve(
    billing_incident: tuple[IncidentResponder, str, int], slack_api: SlackApiServer
) -> None:
    responder, url, incident_id = billing_incident
    assert responder.interactivity is not None
    for action, user in ((Action.acknowledge, "U0TOMAS"), (Action.approve, "U0SAM"), (Action.resolve, "U0CISO")):
        body = block_actions(incident_id, action.value, user)
        assert await click(url, body, signed(SLACK_SIGNING_SECRET, body)) == 200
        await responder.interactivity.drain()
    timeline = await responder.store.timeline.entries(incident_id)
    acted = [(e.kind, e.actor, e.identity) for e in timeline if e.identity]
    assert acted == [("acknowledged", "finance-ops", "U0TOMAS"), ("containment_approve", "sam", "U0SAM"),
                     ("resolved", "ciso", "U0CISO")]  # the CISO is on billing's escalation chain
    async with responder.store.sessions() as s:
        [decision] = (await s.execute(select(ContainmentDecision))).scalars().all()
    assert (decision.incident_id, decision.decision, decision.owner_id, decision.identity) == (
        incident_id, "approve", "sam", "U0SAM")
    await eventually(lambda: _settled_updates(slack_api, 3), what="three root updates")
    [root] = slack_api.roots()
    final = str(root.blocks)
    assert "resolved" in final and "containment approved by sam" in final
    assert not [b for b in root.blocks or [] if b["type"] == "actions"], "a closed incident offers no buttons"
    replies = [r.text for r in slack_api.replies(root)]
    assert replies[0].startswith("Acknowledged by Finance Operations (Slack user U0TOMAS)")
    assert any(r.startswith("Containment approved by Sam Okafor") for r in replies)


async def test_an_open_incident_is_acknowledged_before_it_can_be_resolved(
    billing_incident: tuple[IncidentResponder, str, int], slack_api: SlackApiServer
) -> None:
    responder, url, incident_id = billing_incident
    assert responder.interactivity is not None

    pressed: list[Action] = []

    async def press(action: Action) -> Status:
        body = block_actions(incident_id, action.value, "U0TOMAS")  # a finance-ops member: the responder
        pressed.append(action)  # a second press of one button is a new request: its own timestamp and signature
        assert await click(url, body, signed(SLACK_SIGNING_SECRET, body, int(time.time()) - len(pressed))) == 200
        assert responder.interactivity is not None
        await responder.interactivity.drain()
        return await status_of(responder, incident_id)

    assert await press(Action.resolve) is Status.open, "nobody took it yet: it cannot be resolved"
    [told] = slack_api.calls("chat.postEphemeral")
    assert "an incident that is open cannot become resolved" in told.args["text"]
    assert await press(Action.acknowledge) is Status.acknowledged
    assert await press(Action.resolve) is Status.resolved
    acted = [(e.kind, e.actor) for e in await responder.store.timeline.entries(incident_id) if e.identity]
    assert acted == [("acknowledged", "finance-ops"), ("resolved", "finance-ops")]


def _settled_updates(slack_api: SlackApiServer, n: int) -> bool:
    return len(slack_api.calls("chat.update")) >= n


async def test_anyone_else_is_refused_ephemerally_and_the_refusal_is_on_the_timeline(
    billing_incident: tuple[IncidentResponder, str, int], slack_api: SlackApiServer
) -> None:
    responder, url, incident_id = billing_incident
    assert responder.interactivity is not None
    refused_before = metric_value(metrics.INTERACTION_REFUSALS, action=Action.approve.value)
    attempts = [
        (Action.acknowledge, "U0MALLORY"),  # nobody in the matrix
        (Action.false_positive, "U0SAM"),  # the approver, but not on the responder's chain
        (Action.approve, "U0TOMAS"),  # the responder team, but only the approver may approve
        (Action.deny, "U0CISO"),  # on the chain, still not the approver
    ]
    for action, user in attempts:
        body = block_actions(incident_id, action.value, user)
        assert await click(url, body, signed(SLACK_SIGNING_SECRET, body)) == 200
    await responder.interactivity.drain()
    assert await status_of(responder, incident_id) is Status.open
    refusals = [(e.detail["action"], e.identity) for e in await responder.store.timeline.entries(incident_id)
                if e.kind == "refused"]
    assert sorted(refusals) == sorted((a.value, u) for a, u in attempts)  # clicks are handled concurrently
    told = {m["user"]: m for m in slack_api.ephemerals}
    assert sorted(told) == sorted(u for _, u in attempts) and {m["channel"] for m in told.values()} == {"C0FINOPS"}
    assert "only the named approver, Sam Okafor" in told["U0TOMAS"]["text"]
    assert "only the named responder, Finance Operations" in told["U0MALLORY"]["text"]
    async with responder.store.sessions() as s:
        assert (await s.execute(select(ContainmentDecision))).first() is None
    assert metric_value(metrics.INTERACTION_REFUSALS, action=Action.approve.value) - refused_before == 1


async def test_slack_gets_its_answer_before_the_work_is_done(
    billing_incident: tuple[IncidentResponder, str, int], slack_api: SlackApiServer
) -> None:
    responder, url, incident_id = billing_incident
    assert responder.interactivity is not None
    slack_api.fail("chat.postEphemeral", delay_s=2.0)
    body = block_actions(incident_id, Action.acknowledge.value, "U0MALLORY")
    assert await click(url, body, signed(SLACK_SIGNING_SECRET, body)) == 200
    assert isinstance(responder.interactivity, Interactivity)  # Slack's, which counts the clicks in hand
    assert responder.interactivity.busy == 1, "the refusal is still being sent after the answer"
    await responder.interactivity.drain()
    assert [m["user"] for m in slack_api.ephemerals] == ["U0MALLORY"]


async def test_a_second_decision_is_refused_and_the_first_stands(
    billing_incident: tuple[IncidentResponder, str, int], slack_api: SlackApiServer
) -> None:
    responder, url, incident_id = billing_incident
    assert responder.interactivity is not None
    for action in (Action.deny, Action.approve):
        body = block_actions(incident_id, action.value, "U0SAM")
        assert await click(url, body, signed(SLACK_SIGNING_SECRET, body)) == 200
        await responder.interactivity.drain()
    incident = await responder.store.incidents.incident(incident_id)
    assert incident is not None and incident.decision is not None
    assert (incident.decision.decision, incident.decision.owner_id) == ("deny", "sam")
    assert "containment denied by sam" in slack_api.ephemerals[-1]["text"]


async def test_only_the_approver_releases_a_quarantine_and_only_while_one_holds(
    billing_incident: tuple[IncidentResponder, str, int], slack_api: SlackApiServer
) -> None:
    responder, url, incident_id = billing_incident
    assert responder.interactivity is not None
    inbound = responder.interactivity  # narrowed, for press() below

    presses = iter(range(3))

    async def press(user: str) -> None:  # each press its own request timestamp, or a second one is a replay
        body = block_actions(incident_id, Action.release.value, user)
        at = int(time.time()) - next(presses)
        assert await click(url, body, signed(SLACK_SIGNING_SECRET, body, at)) == 200
        await inbound.drain()

    await press("U0SAM")  # nothing is quarantined yet
    assert "no quarantine in effect" in slack_api.ephemerals[-1]["text"]
    async with responder.store.sessions.begin() as s:  # the playbook's quarantine step took effect
        [step] = (await s.execute(select(ContainmentStep))).scalars()
        step.action, step.status = "quarantine_agent", "done"
    await press("U0TOMAS")  # the responder team may not lift it
    assert "only the named approver, Sam Okafor, may release the quarantine" in slack_api.ephemerals[-1]["text"]
    await press("U0SAM")
    async with responder.store.sessions.begin() as s:
        releases = [r for r in (await s.execute(select(ContainmentStep))).scalars() if r.action == "release"]
    assert [(r.status, r.decided_by, r.detail["identity"]) for r in releases] == [("approved", "sam", "U0SAM")]
    entries = [(e.kind, e.actor, e.identity) for e in await responder.store.timeline.entries(incident_id)
               if e.kind in ("refused", "release_requested")]
    assert entries == [("refused", "unauthorised", "U0TOMAS"), ("release_requested", "sam", "U0SAM")]
