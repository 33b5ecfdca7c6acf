"""The approval desk's rules a gateway or an approver can observe, on a real database and the local Slack API:
when a pending request expires, what an answer says before its approval event is published, the API decision,
waiting, routing without Slack or when Slack fails, the escalation preface, and which messages a decision closes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from responders.approvals.desk import ApprovalDesk
from responders.incident_responder import IncidentResponder
from responders.notifiers.base import CONFLICT, DONE, FORBIDDEN
from responders.notifiers.slack.approvals import ApprovalAction
from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import Settings
from streams.verdict import judge
from tests.support.approval_helpers import GRANT, POLICY, Desk, req
from tests.support.incident_helpers import FakeClock
from warden.contract.actors import Actor
from warden.contract.approval_requests import ApprovalAnswer, ApprovalStatus

PAY = {"agent": {"id": "billing-agent-1"}, "tool": {"name": "billing.pay_vendor",
                                                     "arguments": {"payee": "acme-logistics", "amount": 10}}}
LOOKUP = {"agent": {"id": "iam-agent-1"}, "tool": {"name": "directory.lookup_user"}}


def _text(blocks: list[dict[str, Any]] | None) -> str:
    return repr(blocks or [])


async def test_a_pending_request_expires_when_the_rest_of_its_chain_has_had_its_time(
        desk: tuple[Desk, FakeClock]) -> None:
    d, clock = desk
    t0 = clock()
    first = await d.desk.submit(req(GRANT, request_id="x-1"), gateway="gw", transport="http")
    # Three owners, five minutes each: the first answers by t0+5m, then two more steps of five minutes.
    assert (first.requested_at, first.decided_at, first.expires_at) == (t0, None, t0 + timedelta(minutes=15))
    pay = await d.desk.submit(req(PAY, request_id="x-2"), gateway="gw", transport="http")
    assert pay.expires_at == t0 + timedelta(minutes=10)  # two owners
    await d.settle()
    clock.advance(minutes=5, seconds=1)
    t1 = clock()
    await d.settle()
    climbed = await d.desk.answer("x-1")
    assert climbed is not None and climbed.expires_at == t1 + timedelta(minutes=10)
    last = await d.desk.answer("x-2")
    assert last is not None and last.expires_at == t1 + timedelta(minutes=5)  # the last step: its own five
    assert await d.clicks.click(ApprovalAction.approve, "x-2", "U0TOMAS", "C0FINOPS") == "approved by finance-ops"
    await d.settle()
    decided = await d.desk.answer("x-2")
    assert decided is not None and (decided.status, decided.expires_at, decided.decided_at) == (
        ApprovalStatus.approved, None, t1)


async def test_an_allow_is_decided_at_once_never_expires_and_is_published_once_without_an_event(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, clock = desk
    allowed = await d.desk.submit(req(LOOKUP), gateway="gw", transport="http", request_id="given-id")
    assert (allowed.request_id, allowed.status, allowed.decided_at, allowed.expires_at) == (
        "given-id", ApprovalStatus.allowed, clock(), None)
    assert await d.desk.step() is True
    assert await d.desk.step() is False  # nothing left to do
    assert [(a.request_id, a.status, e) for a, e in d.published] == [("given-id", ApprovalStatus.allowed, None)]
    assert slack_api.roots() == []  # nobody is asked about an allow


async def test_an_approval_reads_pending_until_its_event_is_published(
        desk: tuple[Desk, FakeClock]) -> None:
    d, clock = desk
    await d.desk.submit(req(GRANT, request_id="x-3"), gateway="gw", transport="http")
    await d.settle()
    assert await d.clicks.click(ApprovalAction.approve, "x-3", "U0JORDAN", "D1") == "approved by jordan"
    before = await d.desk.answer("x-3")
    assert before is not None and (before.status, before.decided_by, before.decided_at) == (
        ApprovalStatus.pending, None, None)
    await d.settle()
    after = await d.desk.answer("x-3")
    assert after is not None and (after.status, after.decided_by, after.decided_at) == (
        ApprovalStatus.approved, "jordan", clock())


async def test_a_denial_reads_denied_at_once(desk: tuple[Desk, FakeClock]) -> None:
    d, _ = desk
    await d.desk.submit(req(GRANT, request_id="x-4"), gateway="gw", transport="http")
    await d.settle()
    assert await d.clicks.click(ApprovalAction.deny, "x-4", "U0JORDAN", "D1") == "denied by jordan"
    answer = await d.desk.answer("x-4")
    assert answer is not None and (answer.status, answer.decided_by) == (ApprovalStatus.denied, "jordan")


async def test_an_owner_decides_through_the_api_checked_like_a_click(desk: tuple[Desk, FakeClock]) -> None:
    d, _ = desk
    assert await d.desk.decide_as("nope", "jordan", "tok", approve=True) is None
    await d.desk.submit(req(GRANT, request_id="x-5"), gateway="gw", transport="http")
    outcome, text = await d.desk.decide_as("x-5", "iam-team", "tok-iam", approve=True) or ("", "")
    assert (outcome, text) == (FORBIDDEN, "Refused: only Jordan Lee may decide approval request x-5. "
                                          "Your attempt was recorded.")
    assert await d.desk.decide_as("x-5", "jordan", "tok-j", approve=False) == (DONE, "denied by jordan")
    assert await d.desk.decide_as("x-5", "jordan", "tok-j", approve=True) == (
        CONFLICT, "Refused: approval request x-5 is already denied. Your attempt was recorded.")
    entries = [(e.kind, e.identity, e.detail.get("via")) for e in await d.desk.store.timeline("x-5")
               if e.kind in ("refused", "denied")]
    assert entries == [("refused", "tok-iam", None), ("denied", "tok-j", "api"), ("refused", "tok-j", None)]


async def test_wait_returns_a_final_answer_at_once_and_a_pending_one_after_its_time(
        desk: tuple[Desk, FakeClock]) -> None:
    d, _ = desk
    assert await d.desk.wait("nope", 5) is None
    allowed = await d.desk.submit(req(LOOKUP, request_id="x-6"), gateway="gw", transport="http")
    assert await d.desk.wait("x-6", 0) == allowed
    await d.desk.submit(req(GRANT, request_id="x-7"), gateway="gw", transport="http")
    pending = await asyncio.wait_for(d.desk.wait("x-7", 0.3), 5)
    assert pending is not None and pending.status is ApprovalStatus.pending
    waiting = asyncio.create_task(d.desk.wait("x-7", 20))
    await d.settle()
    assert await d.clicks.click(ApprovalAction.approve, "x-7", "U0JORDAN", "D1") == "approved by jordan"
    await d.settle()
    done = await asyncio.wait_for(waiting, 5)  # woken by the publication, long before its 20 s
    assert done is not None and done.status is ApprovalStatus.approved


async def test_without_slack_a_request_is_routed_for_the_api_and_its_answer_published(
        incident_settings: Settings, slack_api: SlackApiServer) -> None:
    clock = FakeClock()
    responder = IncidentResponder(incident_settings, clock=clock)
    await responder.start()
    published: list[str] = []

    async def publish(answer, event) -> None:  # type: ignore[no-untyped-def]
        published.append(answer.status.value)

    try:
        desk = ApprovalDesk(responder.engine, judge=lambda r, rid, now: judge(r, rid, POLICY, now), clock=clock,
                            publish=publish)
        await desk.submit(req(GRANT, request_id="x-8"), gateway="gw", transport="http")
        assert await desk.step() is True
        [routed] = [e for e in await desk.store.timeline("x-8") if e.kind == "routed"]
        assert routed.detail["to"] == "jordan" and routed.detail["step"] == 1
        assert routed.detail["via"].startswith("none: no Slack notifier")
        assert published == ["pending"] and slack_api.roots() == []
        assert await desk.decide_as("x-8", "jordan", "t", approve=True) == (DONE, "approved by jordan")
        while await desk.step():
            pass
        assert published == ["pending", "approved"]
    finally:
        await responder.stop()


async def test_a_failed_slack_post_is_retried_by_the_outbox_and_the_ask_is_posted_once(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    """The desk records its ask in the outbox with the routing; Slack failing leaves it to the outbox's retries."""
    d, _ = desk
    await d.desk.submit(req(GRANT, request_id="x-9"), gateway="gw", transport="http")
    slack_api.fail("chat.postMessage", status=500, times=2)
    await d.desk.step()
    assert "routed" in await d.kinds("x-9") and slack_api.roots() == []
    await d.settle()
    [message] = slack_api.roots()
    posts = [r for r in slack_api.requests if r.method == "chat.postMessage"]
    assert len(posts) >= 3, "two failed attempts, then the one that posted"
    assert "x-9" in str(message.blocks)


async def test_an_escalation_step_that_approves_is_told_why_and_given_the_buttons(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, clock = desk
    await d.desk.submit(req(PAY, request_id="x-10"), gateway="gw", transport="http")
    await d.settle()
    first = slack_api.roots()[0]
    assert "Escalated to you" not in _text(first.blocks)
    clock.advance(minutes=5, seconds=1)
    await d.settle()
    second = slack_api.roots()[1]
    assert second.channel == "C0FINOPS"
    # (The preface lists every owner who may decide at this level, the recipient included: as it is today.)
    assert "Escalated to you: not answered by sam, finance-ops in time." in _text(second.blocks)
    assert any(b["type"] == "actions" for b in second.blocks or [])
    [escalated] = [e for e in await d.desk.store.timeline("x-10") if e.kind == "escalated"]
    assert escalated.detail == {"to": "finance-ops", "step": 2, "of": 2,
                                "reason": "no answer from sam within 300s"}


async def test_a_decision_closes_every_message_each_showing_whom_it_asked(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, clock = desk
    await d.desk.submit(req(GRANT, request_id="x-11"), gateway="gw", transport="http")
    await d.settle()
    clock.advance(minutes=5, seconds=1)
    await d.settle()
    jordan, iam = slack_api.roots()
    assert await d.clicks.click(ApprovalAction.approve, "x-11", "U0JORDAN", "D1") == "approved by jordan"
    await d.settle()
    assert (jordan.updates, iam.updates) == (1, 1)
    for message, asked in ((jordan, "Jordan"), (iam, "IAM")):
        assert not any(b["type"] == "actions" for b in message.blocks or [])
        [field] = [f["text"] for b in message.blocks or [] if b.get("fields") for f in b["fields"]
                   if f["text"].startswith("*Asked of*")]
        assert asked in field, (message.channel, field)


async def test_a_refusal_is_returned_even_when_telling_the_clicker_fails(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, _ = desk
    await d.desk.submit(req(GRANT, request_id="x-12"), gateway="gw", transport="http")
    slack_api.fail("chat.postEphemeral", status=500, times=10)
    said = await d.clicks.click(ApprovalAction.approve, "x-12", "U0KAI", "D1")
    assert said.startswith("Refused: only Jordan Lee may decide approval request x-12")
    unknown = await d.clicks.click(ApprovalAction.approve, "x-unknown", "U0KAI", "D1")
    assert unknown == "Approval request x-unknown is unknown."


async def test_a_request_s_record_says_what_was_asked_and_how_it_was_judged(desk: tuple[Desk, FakeClock]) -> None:
    d, clock = desk
    grant, lookup = req(GRANT, request_id="x-13"), req(LOOKUP, request_id="x-14")
    await d.desk.submit(grant, gateway="gw", transport="http", identity="gw-token")
    await d.desk.submit(lookup, gateway="gw", transport="kafka")
    j = judge(grant, "x-13", POLICY, clock())
    asked = {e.kind: e.detail for e in await d.desk.store.timeline("x-13")}
    allowed = {e.kind: e.detail for e in await d.desk.store.timeline("x-14")}
    assert asked["requested"] == {"gateway": "gw", "transport": "http", "correlation_id": "corr-1", "session_id": "s-1",
                                  "action": {"identity_change": GRANT["identity_change"]}}
    assert asked["verdict"] == {"verdict": "approval_required", "rule": "unreviewed_identity_change",
                                "reason": j.reason, "evidence": j.evidence, "approver": "jordan",
                                "approval_from": j.approval_from}
    assert j.approval_from, "the example names where the approval must come from"
    assert allowed["requested"]["action"] == {"tool": {"name": "directory.lookup_user"}}, "no empty fields recorded"
    assert (allowed["requested"]["correlation_id"], allowed["requested"]["session_id"]) == ("", "")
    assert {k: allowed["verdict"][k] for k in ("verdict", "rule", "approver", "approval_from")} == {
        "verdict": "allow", "rule": "", "approver": "", "approval_from": ""}


async def test_the_background_pass_says_it_did_something_exactly_when_it_did_and_wakes_the_outbox_for_it(
        desk: tuple[Desk, FakeClock]) -> None:
    """Without a publisher, each pass that routed, escalated or expired something says so (the loop runs again at
    once), a pass with nothing to do says not, and the outbox is woken exactly for the asks it recorded."""
    d, clock = desk
    wakes: list[int] = []
    quiet = ApprovalDesk(d.responder.engine, judge=lambda r, rid, now: judge(r, rid, POLICY, now), clock=clock,
                         notifiers=["slack"], wake=lambda: wakes.append(1))
    assert await quiet.step() is False and wakes == []
    await quiet.submit(req(GRANT, request_id="x-15"), gateway="gw", transport="http")  # jordan, iam-team, ciso
    passes = []
    for minutes in (0, 5, 10):  # the chain's timeouts: 5 minutes for each of its first two steps, 10 for the CISO
        clock.advance(minutes=minutes, seconds=1 if minutes else 0)
        passes.append((await quiet.step(), await quiet.step(), len(wakes)))
    assert passes == [(True, False, 1), (True, False, 2), (True, False, 3)]
    clock.advance(minutes=10, seconds=1)
    assert (await quiet.step(), await quiet.step(), len(wakes)) == (True, False, 3), "expired: nobody more to ask"
    escalated = [e.detail["to"] for e in await quiet.store.timeline("x-15") if e.kind == "escalated"]
    assert escalated == ["iam-team", "ciso"]
    assert (await quiet.answer("x-15")).status is ApprovalStatus.expired  # type: ignore[union-attr]


async def test_a_published_decision_wakes_the_outbox_to_close_the_asked_messages(
        desk: tuple[Desk, FakeClock]) -> None:
    d, clock = desk
    wakes: list[int] = []

    async def publish(answer: object, event: object) -> None:
        return None

    waking = ApprovalDesk(d.responder.engine, judge=lambda r, rid, now: judge(r, rid, POLICY, now), clock=clock,
                          notifiers=["slack"], wake=lambda: wakes.append(1), publish=publish)
    await waking.submit(req(GRANT, request_id="x-16"), gateway="gw", transport="http")
    while await waking.step():
        pass
    assert len(wakes) == 1, "the ask"
    assert await waking.decide_as("x-16", "jordan", "t", approve=True) == (DONE, "approved by jordan")
    while await waking.step():
        pass
    assert len(wakes) == 2, "the closing of the asked message, recorded with the publication"


async def test_wait_gives_a_pending_answer_at_its_bound_not_before_and_not_long_after(
        desk: tuple[Desk, FakeClock]) -> None:
    d, _ = desk
    await d.desk.submit(req(GRANT, request_id="x-17"), gateway="gw", transport="http")
    reads: list[str] = []
    read = d.desk.answer

    async def counted(request_id: str) -> ApprovalAnswer | None:
        reads.append(request_id)
        return await read(request_id)

    d.desk.answer = counted  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    began = loop.time()
    answer = await d.desk.wait("x-17", 1.0)
    took = loop.time() - began
    assert answer is not None and answer.status is ApprovalStatus.pending
    assert took >= 0.9, f"answered after {took:.2f}s, before its bound of 1 s"
    # Not long after either, whatever the machine's load: one read at the start, one once the bound has passed
    # (a wait that overran its bound would read again and again until it ended).
    assert reads == ["x-17", "x-17"], f"{len(reads)} reads in {took:.2f}s"


async def test_of_two_racing_decisions_the_loser_is_told_what_the_winner_decided(
        desk: tuple[Desk, FakeClock]) -> None:
    d, _ = desk
    await d.desk.submit(req(GRANT, request_id="x-18"), gateway="gw", transport="http")
    jordan = Actor("slack", "U0JORDAN", "D1")
    approving, denying = await asyncio.gather(d.desk.decide_by("x-18", jordan, approve=True, person=True),
                                              d.desk.decide_by("x-18", jordan, approve=False, person=True))
    # Either may win the race (PostgreSQL does not keep the order they were started in); exactly one does.
    outcomes = {"approved": approving, "denied": denying}
    [winner] = [word for word, outcome in outcomes.items() if outcome is not None and outcome[0] == DONE]
    [loser] = [outcome for word, outcome in outcomes.items() if word != winner]
    assert outcomes[winner] == (DONE, f"{winner} by jordan")
    assert loser == (CONFLICT, f"Refused: approval request x-18 is already {winner}. Your attempt was recorded.")
    decided = [e for e in await d.desk.store.timeline("x-18") if e.kind in ("approved", "denied")]
    assert [e.kind for e in decided] == [winner]
    assert decided[0].detail == {"by": "jordan", "name": "Jordan Lee", "via": "slack", "level": 0}
    assert decided[0].identity == "U0JORDAN"


async def test_a_clicker_the_notifier_says_is_no_person_is_refused_even_if_named(
        desk: tuple[Desk, FakeClock]) -> None:
    d, _ = desk
    await d.desk.submit(req(GRANT, request_id="x-19"), gateway="gw", transport="http")
    outcome = await d.desk.decide_by("x-19", Actor("slack", "U0JORDAN"), approve=True, person=False)
    assert outcome is not None and outcome[0] == FORBIDDEN
    assert (await d.desk.answer("x-19")).status is ApprovalStatus.pending  # type: ignore[union-attr]
