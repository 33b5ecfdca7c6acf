"""Approval before action, without a broker: the verdict (pure) and the desk (database, Slack API server): the named
approver decides, anyone else is refused and audited, a second decision is refused, no answer escalates then
expires, and the approval record's timeline is one verifiable hash chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from responders.approvals.desk import approval_event
from responders.db.models import Notification
from responders.notifiers.slack.approvals import ApprovalAction
from service.demo.slack_api_server import SlackApiServer
from streams.detectors import DetectorState, detect
from streams.verdict import judge
from tests.support.approval_helpers import GRANT, POLICY, Desk, req
from tests.support.incident_helpers import FakeClock, eventually
from warden.contract.approval_requests import ApprovalRequest, ApprovalStatus, Verdict
from warden.contract.events import ActivityEvent

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


# -- the verdict ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "verdict", "rule", "evidence"), [
    (GRANT, Verdict.approval_required, "unreviewed_identity_change", {"operation": "grant_role",
                                                                      "target": "user:kim"}),
    ({"agent": {"id": "iam-agent-1"}, "tool": {"name": "directory.grant_role",
                                               "arguments": {"user": "user:kim", "role": "support-agent"}}},
     Verdict.approval_required, "unreviewed_identity_change", {"operation": "grant_role", "target": "user:kim"}),
    ({"agent": {"id": "iam-agent-1"}, "tool": {"name": "directory.lookup_user", "arguments": {"user": "user:kim"}}},
     Verdict.allow, None, {}),
    ({"agent": {"id": "iam-agent-1"}, "identity_change": {"operation": "revoke_role", "target": "user:kim"}},
     Verdict.allow, None, {}),
    ({"agent": {"id": "iam-agent-1"}, "tool": {"name": "shell.exec", "arguments": {"cmd": "id"}}},
     Verdict.deny, "unapproved_tool", {"tool": "shell.exec"}),
    ({"agent": {"id": "iam-agent-1"}, "tool": {"name": "directory.grant_role",
                                               "arguments": {"user": "user:kim", "role": "domain-admin"}}},
     Verdict.deny, "argument_out_of_scope", {"tool": "directory.grant_role", "argument": "role"}),
    ({"agent": {"id": "no-such-agent"}, "identity_change": {"operation": "grant_role", "target": "user:kim"}},
     Verdict.deny, "unowned_agent", {"agent": "no-such-agent"}),
    ({"agent": {"id": "billing-agent-1"}, "tool": {"name": "billing.pay_vendor",
                                                    "arguments": {"payee": "acme-logistics", "amount": 10}}},
     Verdict.approval_required, "approval_gate", {"tool": "billing.pay_vendor", "categories": "payment"}),
    ({"agent": {"id": "billing-agent-1"}, "tool": {"name": "billing.lookup_invoice", "arguments": {"id": "1"}}},
     Verdict.approval_required, "refund-needs-approval", {}),
])
def test_the_verdict_names_its_rule_and_evidence(body: dict[str, Any], verdict: Verdict, rule: str | None,
                                                 evidence: dict[str, str]) -> None:
    j = judge(req(body), "r-1", POLICY, NOW)
    assert (j.verdict, j.rule) == (verdict, rule), j.reason
    assert evidence.items() <= j.evidence.items()
    if verdict is Verdict.approval_required:
        wf = POLICY.matrix.workflows[j.workflow or ""]
        assert j.approver == wf.approver
        if rule == "unreviewed_identity_change":  # only the named approver decides; the chain is told
            assert ([o.id for o in j.chain], j.decides) == (["jordan", "iam-team", "ciso"], (True, False, False))
        else:  # the escalation steps marked `approves` decide once reached
            assert ([o.id for o in j.chain], j.decides) == (["sam", "finance-ops"], (True, True))
    else:
        assert j.chain == ()


def test_a_gate_rule_that_cannot_be_evaluated_holds_the_action_for_approval() -> None:
    """Fail closed (issue 28): a gate whose condition raises on this request asks the approver, never allows."""
    from service.runtime.catalogue import CATALOGUE
    from warden.contract.matrix import Matrix
    from warden.policy import build_policy
    m = POLICY.matrix.model_dump(mode="python", exclude_unset=True)
    m["rules"]["custom"][-1]["condition"] = ('event.kind == "tool_call" && event.tool.name == '
                                             '"billing.lookup_invoice" && double(event.tool.arguments.id) > 1.0')
    gated = build_policy(Matrix.model_validate(m), CATALOGUE, sha256="c" * 64)
    body = {"agent": {"id": "billing-agent-1"}, "tool": {"name": "billing.lookup_invoice", "arguments": {"id": "x"}}}
    j = judge(req(body), "r-3", gated, NOW)
    assert (j.verdict, j.rule) == (Verdict.approval_required, "refund-needs-approval"), j.reason
    assert "could not be evaluated" in j.reason


def test_an_unowned_agent_is_denied_even_with_its_rule_disabled() -> None:
    m = POLICY.matrix.model_copy(update={"rules": POLICY.matrix.rules.model_copy(update={"builtin": {
        **POLICY.matrix.rules.builtin, "unowned_agent": POLICY.matrix.rules.builtin["unowned_agent"].model_copy(
            update={"enabled": False})}})})
    from service.runtime.catalogue import CATALOGUE
    from warden.policy import build_policy
    quiet = build_policy(m, CATALOGUE, sha256="b" * 64)
    j = judge(req(GRANT, agent={"id": "stranger"}), "r-2", quiet, NOW)
    assert (j.verdict, j.rule) == (Verdict.deny, "unowned_agent")


def test_a_request_names_exactly_one_action() -> None:
    with pytest.raises(ValueError, match="exactly one of 'tool' or 'identity_change'"):
        req(GRANT, tool={"name": "x"})
    with pytest.raises(ValueError, match="exactly one"):
        ApprovalRequest.model_validate({"agent": {"id": "a"}})


def test_a_granted_approval_covers_the_change_once_and_a_denial_is_evidence() -> None:
    """The approval event a decision becomes is what unreviewed_identity_change reads: the approved change raises
    nothing, the same change again does, and a change after a denial names the denied request."""
    from responders.db.models import ApprovalRecord

    def record(status: str, rid: str) -> ApprovalRecord:
        return ApprovalRecord(id=rid, agent_id="iam-agent-1", workflow="access-provisioner",
                              verdict="approval_required", status=status, target="user:kim", decided_by="jordan",
                              decided_at=NOW, chain=[], evidence={}, action={})

    def change(event_id: str, minutes: int) -> ActivityEvent:
        return ActivityEvent.model_validate({
            "event_id": event_id, "ts": (NOW + timedelta(minutes=minutes)).isoformat(), "kind": "identity_change",
            "agent": {"id": "iam-agent-1"}, "identity_change": {"operation": "grant_role", "target": "user:kim"}})

    state = DetectorState()
    granted = approval_event(record("approved", "req-1"))
    assert granted is not None and granted.approval is not None
    assert detect(granted, POLICY, state) == []
    assert [f.rule for f in detect(change("c-1", 1), POLICY, state)] == []
    second = detect(change("c-2", 2), POLICY, state)
    assert [f.rule for f in second] == ["unreviewed_identity_change"]
    assert "already used" in second[0].evidence["reason"]

    denied = approval_event(record("denied", "req-2"))
    assert denied is not None
    fresh = DetectorState()
    detect(denied, POLICY, fresh)
    after = detect(change("c-3", 1), POLICY, fresh)
    assert [f.rule for f in after] == ["unreviewed_identity_change"]
    assert after[0].evidence["decided_in"] == "req-2"
    assert approval_event(record("expired", "req-3")) is None  # nobody decided: no approval event at all
    not_asked = record("denied", "req-4")
    not_asked.verdict = "deny"  # refused by the policy, not by a person: there was no approval to decide
    undated = record("approved", "req-5")
    undated.decided_at = None
    assert approval_event(not_asked) is None and approval_event(undated) is None


# -- the desk ---------------------------------------------------------------------------------------------------------


async def test_the_named_approver_approves_in_slack_and_the_answer_is_published_once(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, _ = desk
    first = await d.desk.submit(req(GRANT, request_id="req-a"), gateway="gw", transport="http")
    assert (first.status, first.approver) == (ApprovalStatus.pending, "jordan")
    await d.settle()
    [message] = slack_api.roots()
    assert message.channel == "D0JORDAN"  # the direct message with the named approver, and no one else
    assert [e["action_id"] for b in message.blocks or [] if b["type"] == "actions" for e in b["elements"]] == [
        ApprovalAction.approve.value, ApprovalAction.deny.value]
    said = await d.clicks.click(ApprovalAction.approve, "req-a", "U0JORDAN", "D1")
    assert said == "approved by jordan"
    await d.settle()
    answer = await d.desk.answer("req-a")
    assert answer is not None and (answer.status, answer.decided_by) == (ApprovalStatus.approved, "jordan")
    statuses = [(a.status, e is not None) for a, e in d.published]
    assert statuses == [(ApprovalStatus.pending, False), (ApprovalStatus.approved, True)]
    event = d.published[-1][1]
    assert event is not None and event.approval is not None
    assert (event.approval.approver, event.approval.ref, event.agent.id) == ("jordan", "user:kim", "iam-agent-1")
    assert message.updates == 1 and not any(b["type"] == "actions" for b in
                                            slack_api.roots()[0].blocks or [])  # the buttons went
    assert await d.kinds("req-a") == ["requested", "verdict", "routed", "approved"]
    verification = await d.trail.verify()
    assert verification.ok and verification.chains >= 1


async def test_anyone_else_is_refused_audited_and_told_and_a_second_decision_is_refused(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, _ = desk
    await d.desk.submit(req(GRANT, request_id="req-b"), gateway="gw", transport="kafka")
    await d.settle()
    refused = await d.clicks.click(ApprovalAction.approve, "req-b", "U0KAI", "D1")  # not the approver
    assert refused.startswith("Refused: only Jordan Lee may decide")
    # the ignore below: req-b was asked: answer() is None only for an unknown id
    assert (await d.desk.answer("req-b")).status is ApprovalStatus.pending  # type: ignore[union-attr]
    assert await d.clicks.click(ApprovalAction.deny, "req-b", "U0JORDAN", "D1") == "denied by jordan"
    again = await d.clicks.click(ApprovalAction.approve, "req-b", "U0JORDAN", "D1")  # a replayed decision
    assert again == "Refused: approval request req-b is already denied. Your attempt was recorded."
    # the ignore below: req-b was asked: answer() is None only for an unknown id
    assert (await d.desk.answer("req-b")).status is ApprovalStatus.denied  # type: ignore[union-attr]
    entries = await d.desk.store.timeline("req-b")
    assert [(e.kind, e.identity) for e in entries if e.kind in ("refused", "denied")] == [
        ("refused", "U0KAI"), ("denied", "U0JORDAN"), ("refused", "U0JORDAN")]
    assert [e["user"] for e in slack_api.ephemerals] == ["U0KAI", "U0JORDAN"]
    assert (await d.trail.verify()).ok


async def test_no_answer_escalates_up_the_approving_chain_then_expires(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, clock = desk
    await d.desk.submit(req(GRANT, request_id="req-c"), gateway="gw", transport="http")
    await d.settle()
    clock.advance(minutes=5, seconds=1)
    await d.settle()
    assert [m.channel for m in slack_api.roots()] == ["D0JORDAN", "C0IAM"]
    # Jordan's time is up: iam-team is told to chase them.
    clock.advance(minutes=5, seconds=1)
    await d.settle()
    assert [m.channel for m in slack_api.roots()] == ["D0JORDAN", "C0IAM", "D0CISO"]
    # The steps are told, with no buttons: only the named approver decides an identity change.
    assert [any(b["type"] == "actions" for b in m.blocks or []) for m in slack_api.roots()] == [True, False, False]
    assert "only they may approve this identity change" in str(slack_api.roots()[1].blocks)
    clock.advance(minutes=5, seconds=1)
    await d.settle()
    answer = await d.desk.answer("req-c")
    assert answer is not None and answer.status is ApprovalStatus.expired and answer.decided_by is None
    assert await d.kinds("req-c") == ["requested", "verdict", "routed", "escalated", "routed", "escalated", "routed",
                                      "expired"]
    assert d.published[-1][0].status is ApprovalStatus.expired and d.published[-1][1] is None
    refused = await d.clicks.click(ApprovalAction.approve, "req-c", "U0CISO", "D0CISO")
    assert refused.startswith("Refused: only Jordan Lee may decide")
    late = await d.clicks.click(ApprovalAction.approve, "req-c", "U0JORDAN", "D1")
    assert late == "Refused: approval request req-c is already expired. Your attempt was recorded."
    assert (await d.trail.verify()).ok


async def test_an_approving_escalation_step_decides_a_gated_tool_call_once_reached_and_not_before(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, clock = desk
    pay = {"agent": {"id": "billing-agent-1"}, "tool": {"name": "billing.pay_vendor",
                                                         "arguments": {"payee": "acme-logistics", "amount": 10}}}
    await d.desk.submit(req(pay, request_id="req-d"), gateway="gw", transport="http")
    await d.settle()
    early = await d.clicks.click(ApprovalAction.approve, "req-d", "U0TOMAS", "C0FINOPS")  # finance-ops, too early
    assert early.startswith("Refused: only Sam Okafor may decide")
    clock.advance(minutes=5, seconds=1)
    await d.settle()
    assert [m.channel for m in slack_api.roots()] == ["D0SAM", "C0FINOPS"]
    assert await d.clicks.click(ApprovalAction.approve, "req-d", "U0TOMAS", "C0FINOPS") == "approved by finance-ops"


async def test_an_escalation_step_never_decides_an_identity_change(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, clock = desk
    await d.desk.submit(req(GRANT, request_id="req-i"), gateway="gw", transport="http")
    await d.settle()
    clock.advance(minutes=5, seconds=1)
    await d.settle()
    refused = await d.clicks.click(ApprovalAction.approve, "req-i", "U0NOOR", "C0IAM")  # iam-team, reached
    assert refused.startswith("Refused: only Jordan Lee may decide")
    assert await d.clicks.click(ApprovalAction.approve, "req-i", "U0JORDAN", "D1") == "approved by jordan"


async def test_a_resubmitted_request_is_answered_not_recorded_twice(desk: tuple[Desk, FakeClock]) -> None:
    d, _ = desk
    one = await d.desk.submit(req(GRANT, request_id="req-e"), gateway="gw", transport="http")
    two = await d.desk.submit(req(GRANT, request_id="req-e"), gateway="gw", transport="http")
    assert one == two
    assert await d.kinds("req-e") == ["requested", "verdict"]


async def test_allow_and_deny_are_final_at_once_and_untrusted_text_is_escaped(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, _ = desk
    allowed = await d.desk.submit(req({"agent": {"id": "iam-agent-1"}, "tool": {"name": "directory.lookup_user"}}),
                                  gateway="gw", transport="http")
    denied = await d.desk.submit(req({"agent": {"id": "nobody"}, "tool": {"name": "x"}}), gateway="gw",
                                 transport="http")
    assert (allowed.status, denied.status, denied.rule) == (ApprovalStatus.allowed, ApprovalStatus.denied,
                                                            "unowned_agent")
    hostile = await d.desk.submit(req(GRANT, identity_change={"operation": "grant_role",
                                                              "target": "<!channel> <@U0CISO>",
                                                              "entitlement": "x&y"}),
                                  gateway="gw", transport="http")
    assert hostile.status is ApprovalStatus.pending
    await d.settle()
    await eventually(slack_api.roots, what="the approver's message")
    body = slack_api.bodies()
    assert "<!channel>" not in body and "&lt;!channel&gt;" in body and "x&amp;y" in body


async def test_the_changes_made_are_put_on_the_record_they_belong_to(desk: tuple[Desk, FakeClock]) -> None:
    d, clock = desk
    store = d.desk.store
    await d.desk.submit(req(GRANT, request_id="req-f"), gateway="gw", transport="http")
    await d.settle()
    assert await d.clicks.click(ApprovalAction.approve, "req-f", "U0JORDAN", "D1") == "approved by jordan"
    later = clock() + timedelta(seconds=1)

    async def change(event_id: str, target: str = "user:kim") -> tuple[str, str] | None:
        return await store.match_action("iam-agent-1", target, event_id, at=later, now=later,
                                        detail={"event_id": event_id})

    assert await change("chg-1") == ("req-f", "action")
    assert await change("chg-1") is None  # the same event again: already there
    assert await change("chg-2") == ("req-f", "action_without_approval")
    assert await change("chg-3", target="user:other") is None  # no request concerns it
    await d.desk.submit(req(GRANT, request_id="req-g", identity_change={"operation": "grant_role",
                                                                        "target": "user:lee"}),
                        gateway="gw", transport="http")
    await d.settle()
    await d.clicks.click(ApprovalAction.deny, "req-g", "U0JORDAN", "D1")
    assert await change("chg-4", target="user:lee") == ("req-g", "action_without_approval")
    entries = await store.timeline("req-g")
    assert entries[-1].detail["reason"] == "the request was denied"
    assert await store.watched_agents(clock() - timedelta(hours=1)) == {"iam-agent-1"}
    assert (await d.trail.verify()).ok


async def test_secrets_in_a_request_never_reach_slack_the_record_or_the_answer(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    d, _ = desk
    secret = "sk-live-a1b2c3d4e5f6g7h8i9j0"
    body = {"request_id": "req-s", "agent": {"id": "billing-agent-1"}, "tool": {"name": "billing.pay_vendor",
            "arguments": {"payee": "acme-logistics", "amount": 10, "memo": f"use {secret}",
                          "api_key": "hunter2-not-shown"}}}
    answer = await d.desk.submit(req(body), gateway="gw", transport="http")
    assert answer.status is ApprovalStatus.pending and answer.rule == "approval_gate"
    await d.settle()
    await eventually(slack_api.roots, what="the approver's message")
    entries = await d.desk.store.timeline("req-s")
    record = await d.desk.store.get("req-s")
    seen = slack_api.bodies() + repr([e.detail for e in entries]) + repr(record.action if record else None) \
        + answer.model_dump_json()
    assert secret not in seen and "hunter2-not-shown" not in seen
    assert "acme-logistics" in slack_api.bodies()  # the rest of the action is shown


def test_the_lint_warns_about_an_approval_gate_no_catalogued_tool_can_meet() -> None:
    from service.runtime.catalogue import CATALOGUE
    from warden.contract.matrix import Matrix
    from warden.policy import build_policy

    m = POLICY.matrix.model_dump(mode="python", exclude_unset=True)
    m["tools"] = {name: spec for name, spec in m["tools"].items() if "payment" not in spec.get("categories", [])}
    built = build_policy(Matrix.model_validate(m), CATALOGUE, sha256="c" * 64)
    [warning] = [w for w in built.warnings if ".approvals." in w.path]
    assert warning.path == "workflows.billing-agent.scope.approvals.categories.0"
    assert "filed under 'payment': the approval gate can never apply" in warning.reason


async def test_a_retried_ask_whose_reply_was_lost_is_not_posted_twice(
        desk: tuple[Desk, FakeClock], slack_api: SlackApiServer) -> None:
    """The ask goes through the outbox: Slack posts it but its reply comes after the 1 s timeout, so the row is
    retried, and the retry finds the message by the row's key instead of asking the approver a second time."""
    d, clock = desk
    slack_api.fail("chat.postMessage", delay_s=2.5)
    await d.desk.submit(req(GRANT, request_id="req-r"), gateway="gw", transport="http")
    while await d.desk.step():
        pass

    async def failed_once() -> bool:
        async with d.responder.store.sessions() as s:
            row = (await s.execute(select(Notification).where(Notification.approval_id == "req-r"))).scalar_one()
            return row.last_error is not None and row.claim is None

    await eventually(failed_once, what="the first attempt, timed out")
    clock.advance(seconds=1)  # the retry is due
    await d.settle()
    [message] = slack_api.roots()
    assert len(slack_api.calls("chat.postMessage")) == 1
    assert slack_api.calls("conversations.history"), "the retry must look for the ask before posting"
    async with d.responder.store.sessions() as s:
        [row] = (await s.execute(select(Notification).where(Notification.approval_id == "req-r"))).scalars()
    assert (row.kind, row.status, row.attempts, row.address, row.ref) == (
        "approval", "delivered", 2, "D0JORDAN", message.ts)
    assert row.effect_key == "approval:req-r:0/slack"
    assert await d.clicks.click(ApprovalAction.approve, "req-r", "U0JORDAN", "D0JORDAN") == "approved by jordan"
    await d.settle()
    assert message.updates == 1 and not any(b["type"] == "actions" for b in message.blocks or [])
    assert len(slack_api.roots()) == 1
