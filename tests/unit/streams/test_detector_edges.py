"""Edges of the built-in detectors that mutation testing found untested (pure, no broker): the exact boundaries of
approval windows and quarantines, the caps of the approval state, what a custom rule's finding targets."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import timedelta

import pytest

from service.runtime.catalogue import load as load_policy
from service.runtime.settings import BUNDLED_POLICY
from streams.detectors import REGISTRY, DetectorState, detect
from streams.detectors.unreviewed_identity_change import State
from tests.support.matrix_builder import T0, approval, change, ev, policy, tool
from warden.contract.containment import QuarantineMark
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding

P = policy()  # provisioner (iam-agent): grant_* needs jordan's approval within 30m


def run(events: list[ActivityEvent], state: DetectorState | None = None) -> list[Finding]:
    state = state or DetectorState()
    return [f for e in events for f in detect(e, P, state)]


def unreviewed(findings: list[Finding]) -> list[str]:
    return [f.evidence["reason"] for f in findings if f.rule == "unreviewed_identity_change"]


# --- unreviewed_identity_change: the edges of an approval ------------------------------------------------------


def test_an_approval_at_the_same_instant_as_the_change_covers_it() -> None:
    assert unreviewed(run([approval("iam-agent", "jordan", "user:bob", at=5), change("iam-agent", "user:bob", at=5)]))\
        == []


def test_an_approval_exactly_one_window_old_still_covers_the_change() -> None:
    window = 30 * 60
    assert unreviewed(run([approval("iam-agent", "jordan", "user:bob"), change("iam-agent", "user:bob", at=window)]))\
        == []
    [reason] = unreviewed(run([approval("iam-agent", "jordan", "user:amy"), change("iam-agent", "user:amy",
                                                                                     at=window + 1)]))
    assert reason == "the approval from 'jordan' is older than the 0:30:00 window"


def test_of_two_decisions_with_one_timestamp_the_later_arrival_stands() -> None:
    events = [approval("iam-agent", "jordan", "user:bob", at=1),
              approval("iam-agent", "jordan", "user:bob", at=1, decision="rejected"),
              change("iam-agent", "user:bob", at=2)]
    assert unreviewed(run(events)) == ["rejected by 'jordan'"]


def test_an_identity_change_that_carries_an_approval_part_is_still_judged_as_a_change() -> None:
    smuggled = change("iam-agent", "user:bob", at=1, approval={"approver": "jordan", "decision": "approved",
                                                              "ref": "user:bob"})
    assert unreviewed(run([smuggled])) == ["no approval from the named approver 'jordan'"]


def test_the_approval_state_forgets_the_least_recently_seen_agent_and_ref_past_its_caps() -> None:
    state = State(max_agents=2, max_refs=2)
    for agent in ("a1", "a2"):
        state.record(approval(agent, "jordan", "r1"))
    assert set(state.decisions("a1", ("r1",))) == {"jordan"}, "two agents fit"
    state.record(approval("a1", "jordan", "r2"))  # a1 seen again: a2 is now the oldest
    state.record(approval("a3", "jordan", "r1"))
    assert state.decisions("a2", ("r1",)) == {} and set(state.decisions("a1", ("r1",))) == {"jordan"}
    state.record(approval("a1", "jordan", "r1"))  # r1 used again: r2 is now a1's oldest ref
    state.record(approval("a1", "jordan", "r3"))
    assert state.decisions("a1", ("r2",)) == {}
    assert set(state.decisions("a1", ("r1",))) == set(state.decisions("a1", ("r3",))) == {"jordan"}


# --- quarantine_breach ------------------------------------------------------------------------------------------


def test_activity_from_the_moment_of_quarantine_on_is_a_critical_breach_and_before_it_is_not() -> None:
    since = T0 + timedelta(seconds=10)
    state = DetectorState(quarantined={"iam-agent": QuarantineMark(agent_id="iam-agent", since=since, incident_id=7)})
    before, at, after = (tool("iam-agent", "directory.lookup_user", at=s) for s in (9, 10, 11))
    breaches = [f for e in (before, at, after) for f in detect(e, P, state) if f.rule == "quarantine_breach"]
    assert [f.event_id for f in breaches] == [at.event_id, after.event_id]
    assert breaches[0].severity.value == "critical"
    assert breaches[0].evidence == {"agent": "iam-agent", "kind": "tool_call", "quarantined_since": since.isoformat(),
                                    "quarantined_by_incident": "7", "tool": "directory.lookup_user"}
    assert [f.rule for f in detect(tool("help-bot", "kb.search", at=11), P, state)] == [], "only the quarantined"


# --- custom rules and the finding builder -----------------------------------------------------------------------


CUSTOM = {"custom": [
    {"id": "touches-anything", "condition": 'event.kind == "data_access" || event.kind == "identity_change"',
     "severity": "low"},
    {"id": "has-a-session", "condition": "has(event.session_id)", "severity": "low"},
]}


def test_a_custom_rule_targets_the_resource_or_the_identity_the_event_acted_on() -> None:
    pol = policy(rules=CUSTOM)
    data = ev("data_access", "iam-agent", resource={"type": "dataset", "id": "ldap://people/bob"})
    ident = change("iam-agent", "user:amy", operation="reset_password")
    targets = [f.target for e in (data, ident) for f in detect(e, pol, DetectorState()) if f.rule == "touches-anything"]
    assert targets == ["ldap://people/bob", "user:amy"]


def test_a_custom_rule_sees_absent_fields_as_absent() -> None:
    pol = policy(rules=CUSTOM)
    without, with_session = ev("prompt", "iam-agent"), ev("prompt", "iam-agent", session_id="s1")
    fired = [f.event_id for e in (without, with_session) for f in detect(e, pol, DetectorState())
             if f.rule == "has-a-session"]
    assert fired == [with_session.event_id]


def test_rule_info_is_fixed_once_registered() -> None:
    with pytest.raises(FrozenInstanceError):
        REGISTRY["retry_loop"].info.id = "renamed"  # type: ignore[misc]  # the assignment must raise: frozen


def test_a_finding_names_the_credential_only_when_a_playbook_may_act_on_it() -> None:
    credential = {"id": "kid-1", "issuer": "https://issuer.example", "token": "s.secret-token"}
    read = {"type": "secret", "id": "vault://prod/pg-root"}
    [unbound] = run([ev("secret_access", "iam-agent", resource=read, credential=credential)])
    assert (unbound.containment, unbound.credential) == ([], None), "no playbook bound: nothing to revoke"
    bundled = load_policy(BUNDLED_POLICY)  # binds contain_agent to critical findings
    [bound] = detect(ev("secret_access", "billing-agent-1", resource=read, credential=credential), bundled,
                     DetectorState())
    assert bound.containment and bound.credential is not None
    assert (bound.credential.id, bound.credential.issuer, bound.credential.sealed_token) == (
        "kid-1", "https://issuer.example", None), "the token is sealed by the runtime, never carried in clear"
