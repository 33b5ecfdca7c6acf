"""Every built-in detector on its own: it fires, it does not fire, and its edge cases (pure, no broker)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest

from streams.detectors import DETECTORS, REGISTRY, DetectorState, detect
from streams.detectors.base import Context
from tests.support.matrix_builder import T0, approval, change, ev, policy, tool, with_scope
from tests.support.scope_builder import scoped
from warden.contract.containment import QuarantineMark
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.policy import Policy

P = policy()


def run(events: Iterable[ActivityEvent], pol: Policy = P) -> list[Finding]:
    """Run events in order through detect() with one fresh state; every finding, in order."""
    state = DetectorState()
    return [f for e in events for f in detect(e, pol, state)]


def only(findings: list[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def test_every_builtin_detector_is_registered_once_with_an_owasp_and_a_nist_mapping() -> None:
    assert len(REGISTRY) == len(DETECTORS) >= 7
    for rule_id, detector in REGISTRY.items():
        assert detector.info.id == rule_id
        assert any(f.startswith("OWASP-") for f in detector.info.frameworks)
        assert any(f.startswith("NIST-AI-RMF:") for f in detector.info.frameworks)


# --- unowned_agent ---------------------------------------------------------------------------------------------


def test_an_agent_no_workflow_lists_is_a_finding_for_the_default_security_owner() -> None:
    [f] = run([ev("prompt", "stray-agent", workflow="provisioner")])
    assert (f.rule, f.severity.value, f.workflow) == ("unowned_agent", "high", None)
    assert f.owners.responder.id == "secops"
    assert [s.owner.id for s in f.owners.escalation] == ["secops", "ciso"]
    assert f.evidence["claimed_workflow"] == "provisioner"  # the claim is evidence, never an owner
    assert f.frameworks == ["OWASP-ASI10", "NIST-AI-RMF:GOVERN"]


def test_a_listed_agent_is_owned() -> None:
    assert run([ev("prompt", "help-bot")]) == []


def test_an_unowned_agent_is_never_dropped_even_for_kinds_no_other_detector_reads() -> None:
    kinds = [ev("completion", "ghost"), ev("agent_invoke", "ghost"), tool("ghost", "anything")]
    assert [f.rule for f in run(kinds)] == ["unowned_agent"] * 3


# --- unapproved_tool -------------------------------------------------------------------------------------------


def test_a_tool_outside_the_scope_fires_with_redacted_arguments() -> None:
    [f] = run([tool("help-bot", "shell.exec", tool={"arguments": {"cmd": "curl", "api_key": "sk-abcdefghijklmnop12"}})])
    assert (f.rule, f.severity.value, f.target) == ("unapproved_tool", "medium", "shell.exec")
    assert "sk-abcdefghijklmnop12" not in f.model_dump_json()
    assert f.owners.responder.id == "data-gov"


@pytest.mark.parametrize("name", ["directory.lookup_user", "crm.read_accounts", "crm.read_"])
def test_exact_names_and_globs_in_scope_do_not_fire(name: str) -> None:
    assert run([tool("iam-agent", name)]) == []


@pytest.mark.parametrize("name", ["crm.write_accounts", "CRM.read_accounts", "directory.lookup_user2", "crm.read"])
def test_a_glob_matches_the_whole_name_case_sensitively(name: str) -> None:
    assert [f.rule for f in run([tool("iam-agent", name)])] == ["unapproved_tool"]


def test_the_same_violation_is_one_level_higher_in_an_agentic_workflow() -> None:
    chat, agentic = run([tool("rag-bot", "shell.exec"), tool("iam-agent", "shell.exec")])
    assert (chat.severity.value, agentic.severity.value) == ("medium", "high")


def test_a_severity_override_applies_before_the_agentic_raise() -> None:
    pol = policy(rules={"builtin": {"unapproved_tool": {"severity": "low"}}})
    chat, agentic = run([tool("rag-bot", "x"), tool("iam-agent", "x")], pol)
    assert (chat.severity.value, agentic.severity.value) == ("low", "medium")


def test_low_risk_chat_can_be_exempted_but_high_risk_chat_and_agentic_cannot() -> None:
    pol = policy(rules={"builtin": {"unapproved_tool": {"exempt_chat_low_risk": True}}})
    findings = run([tool("help-bot", "x"), tool("rag-bot", "x"), tool("iam-agent", "x")], pol)
    assert [f.agent_id for f in findings] == ["rag-bot", "iam-agent"]


def test_a_shadow_rule_still_makes_a_finding_marked_shadow() -> None:
    pol = policy(rules={"builtin": {"unapproved_tool": {"mode": "shadow"}}})
    [f] = run([tool("help-bot", "x")], pol)
    assert f.shadow is True
    [g] = run([tool("help-bot", "x")])
    assert g.shadow is False


def test_a_disabled_rule_makes_no_finding() -> None:
    pol = policy(rules={"builtin": {"unapproved_tool": {"enabled": False}}})
    assert run([tool("help-bot", "x")], pol) == []


# --- secret_access ---------------------------------------------------------------------------------------------


def test_a_secret_outside_the_grant_fires_and_never_carries_the_token() -> None:
    e = ev("secret_access", "iam-agent", resource={"type": "secret", "id": "vault://prod/db-root"},
           credential={"id": "kid-7", "token": "hvs.super-secret-token-value"})
    [f] = run([e])
    assert (f.rule, f.target, f.severity.value) == ("secret_access", "vault://prod/db-root", "critical")
    assert f.evidence["credential_id"] == "kid-7"
    assert "super-secret-token-value" not in f.model_dump_json()


def test_a_secret_inside_the_grant_glob_does_not_fire() -> None:
    assert run([ev("secret_access", "iam-agent", resource={"type": "secret", "id": "vault://iam/writer"})]) == []


def test_a_workflow_with_no_secrets_in_scope_may_read_none() -> None:
    [f] = run([ev("secret_access", "help-bot", resource={"type": "secret", "id": "vault://iam/writer"})])
    assert f.rule == "secret_access"


def test_a_secret_typed_resource_read_as_data_is_judged_as_a_secret_not_as_data() -> None:
    [f] = run([ev("data_access", "help-bot", resource={"type": "secret", "id": "vault://x"})])
    assert f.rule == "secret_access"


def test_a_secret_reported_as_the_events_resource_is_judged_on_it_not_on_the_tools_argument() -> None:
    pol = scoped()
    via_argument = tool("iam-agent", "vault.read", tool={"arguments": {"path": "vault://prod/db"}})
    [f] = only(run([via_argument], pol), "secret_access")
    assert (f.evidence["secret"], f.evidence["tool"]) == ("vault://prod/db", "vault.read")
    reported = tool("iam-agent", "vault.read", tool={"arguments": {"path": "vault://iam/k"}},
                    resource={"type": "secret", "id": "vault://prod/db"})
    [f] = only(run([reported], pol), "secret_access")
    assert f.evidence["secret"] == "vault://prod/db"
    assert "tool" not in f.evidence, "`tool` marks a secret named by the call's argument"


# --- data_out_of_scope -------------------------------------------------------------------------------------


def test_data_outside_the_data_owners_globs_fires() -> None:
    [f] = run([ev("data_access", "rag-bot", resource={"type": "dataset", "id": "s3://raw/payroll.csv"})])
    assert (f.rule, f.target) == ("data_out_of_scope", "s3://raw/payroll.csv")
    assert "outside the data owner's scope" in f.evidence["reason"]


def test_data_in_scope_at_or_below_the_classification_does_not_fire() -> None:
    events = [ev("data_access", "rag-bot", resource={"type": "dataset", "id": "s3://approved/a", "classification": c})
              for c in ("public", "internal", "Internal")]
    assert run(events) == []


def test_data_in_scope_but_above_the_workflows_classification_fires() -> None:
    [f] = run([ev("data_access", "rag-bot",
                  resource={"type": "dataset", "id": "s3://approved/a", "classification": "confidential"})])
    assert "above the workflow's 'internal'" in f.evidence["reason"]
    assert "outside" not in f.evidence["reason"]


def test_an_unknown_classification_fails_closed() -> None:
    [f] = run([ev("data_access", "rag-bot",
                  resource={"type": "dataset", "id": "s3://approved/a", "classification": "top-sekrit"})])
    assert f.rule == "data_out_of_scope"


def test_a_retrieval_tool_call_naming_a_repository_is_checked_against_the_data_scope() -> None:
    allowed = tool("help-bot", "kb.search", resource={"type": "repository", "id": "repo://docs/handbook"})
    denied = tool("help-bot", "kb.search", resource={"type": "repository", "id": "repo://finance/ledger"})
    assert [(f.rule, f.target) for f in run([allowed, denied])] == [("data_out_of_scope", "repo://finance/ledger")]


# --- unreviewed_identity_change --------------------------------------------------------------------------------


def test_an_identity_change_with_no_approval_fires_critical() -> None:
    [f] = run([change("iam-agent", "user:bob")])
    assert (f.rule, f.severity.value, f.target) == ("unreviewed_identity_change", "critical", "user:bob")
    assert "no approval from the named approver 'jordan'" in f.evidence["reason"]
    assert f.owners.approver is not None and f.owners.approver.id == "jordan"


def test_an_approval_from_the_named_approver_before_the_change_covers_it() -> None:
    assert run([approval("iam-agent", "jordan", "user:bob", at=0), change("iam-agent", "user:bob", at=60)]) == []


def test_an_approval_may_name_the_change_by_its_event_id() -> None:
    assert run([approval("iam-agent", "jordan", "chg-1"), change("iam-agent", "user:x", at=1, event_id="chg-1")]) == []


def test_an_approval_from_someone_else_does_not_count() -> None:
    [f] = run([approval("iam-agent", "marco", "user:bob"), change("iam-agent", "user:bob", at=1)])
    assert "approved by marco, not by the named approver 'jordan'" in f.evidence["reason"]


def test_a_rejection_counts_as_no_approval() -> None:
    [f] = run([approval("iam-agent", "jordan", "user:bob", decision="rejected"), change("iam-agent", "user:bob", at=1)])
    assert "rejected by 'jordan'" in f.evidence["reason"]


def test_a_later_rejection_withdraws_an_approval() -> None:
    events = [approval("iam-agent", "jordan", "user:bob", at=0),
              approval("iam-agent", "jordan", "user:bob", at=10, decision="rejected"),
              change("iam-agent", "user:bob", at=20)]
    assert [f.rule for f in run(events)] == ["unreviewed_identity_change"]


def test_an_approval_after_the_change_does_not_count() -> None:
    findings = run([change("iam-agent", "user:bob", at=0), approval("iam-agent", "jordan", "user:bob", at=5)])
    assert [f.rule for f in findings] == ["unreviewed_identity_change"]


def test_an_approval_dated_after_the_change_does_not_count_even_if_it_arrived_first() -> None:
    [f] = run([approval("iam-agent", "jordan", "user:bob", at=30), change("iam-agent", "user:bob", at=10)])
    assert "dated after the change" in f.evidence["reason"]


def test_an_approval_older_than_the_window_does_not_count() -> None:
    [f] = run([approval("iam-agent", "jordan", "user:bob", at=0), change("iam-agent", "user:bob", at=31 * 60)])
    assert "older than" in f.evidence["reason"]


def test_one_approval_covers_one_change_but_a_redelivered_change_is_still_covered() -> None:
    first = change("iam-agent", "user:bob", at=1)
    events = [approval("iam-agent", "jordan", "user:bob"), first, first, change("iam-agent", "user:bob", at=2)]
    [f] = run(events)
    assert "already used" in f.evidence["reason"]


def test_an_approval_for_another_agent_does_not_count() -> None:
    findings = run([approval("other-agent", "jordan", "user:bob"), change("iam-agent", "user:bob", at=1)])
    assert [f.rule for f in findings] == ["unowned_agent", "unreviewed_identity_change"]


def test_operations_outside_require_approval_need_none() -> None:
    assert run([change("iam-agent", "user:bob", operation="revoke_role")]) == []


def test_the_approval_can_be_required_from_another_named_role() -> None:
    pol = with_scope("provisioner", identity_changes={"require_approval": ["*"], "approval_from": "business_owner"})
    assert run([approval("iam-agent", "marco", "u1"), change("iam-agent", "u1", at=1)], pol) == []
    assert [f.rule for f in run([approval("iam-agent", "jordan", "u1"), change("iam-agent", "u1", at=1)], pol)] == [
        "unreviewed_identity_change"]


def test_the_evidence_names_the_role_and_the_owner_whose_approval_was_required() -> None:
    [f] = run([change("iam-agent", "user:bob")])
    assert (f.evidence["required_from"], f.evidence["window"]) == ("approver (jordan)", "0:30:00")


def decision(at: float, verdict: str, request: str) -> ActivityEvent:
    """The named approver's decision on user:bob, taken by Warden on a gateway's approval request."""
    return ev("approval", "iam-agent", at, approval={"approver": "jordan", "decision": verdict, "ref": "user:bob"},
              attributes={"approval_request": request})


def test_a_change_after_a_denied_request_names_it_but_one_after_a_stale_approval_does_not() -> None:
    [denied] = run([decision(0, "rejected", "req-1"), change("iam-agent", "user:bob", at=1)])
    assert denied.evidence["decided_in"] == "req-1"
    [stale] = run([decision(0, "approved", "req-2"), change("iam-agent", "user:bob", at=31 * 60)])
    assert "older than" in stale.evidence["reason"]
    assert "decided_in" not in stale.evidence, "the request was approved, not denied"


def test_only_a_change_inferred_from_a_catalogued_tool_call_names_a_tool() -> None:
    pol = scoped()
    [inferred] = run([tool("iam-agent", "directory.grant_role", tool={"arguments": {"user": "bob"}})], pol)
    assert (inferred.rule, inferred.target, inferred.evidence["tool"]) == (
        "unreviewed_identity_change", "bob", "directory.grant_role")
    reported = ev("identity_change", "iam-agent", tool={"name": "directory.grant_role"},
                  identity_change={"operation": "grant_role", "target": "bob"})
    [f] = only(run([reported], pol), "unreviewed_identity_change")
    assert "tool" not in f.evidence, "the event reports the change itself"


# --- retry_loop ------------------------------------------------------------------------------------------------


def call(at: float, args: dict[str, object] | None = None, session: str | None = "s1") -> ActivityEvent:
    return tool("iam-agent", "directory.lookup_user", at, tool={"arguments": args or {"user": "bob"}},
                session_id=session)


def test_more_than_n_identical_calls_in_a_session_fire_once() -> None:
    findings = only(run([call(i) for i in range(5)]), "retry_loop")
    assert len(findings) == 1
    assert findings[0].evidence["limit"].startswith("more than 3 identical calls")
    assert findings[0].severity.value == "high"  # medium, raised for agentic


def test_n_identical_calls_do_not_fire() -> None:
    assert only(run([call(i) for i in range(3)]), "retry_loop") == []


def test_different_arguments_or_sessions_are_different_calls() -> None:
    events = [call(0), call(1), call(2, {"user": "amy"}), call(3, session="s2"), call(4, {"user": "bob"})]
    assert only(run(events), "retry_loop") == []


def test_the_same_arguments_to_different_tools_are_different_calls() -> None:
    lookups = [call(i) for i in range(3)]  # the limit is more than 3 identical calls: 3 + 3 is no loop
    other = [tool("iam-agent", "directory.list_groups", 3 + i, tool={"arguments": {"user": "bob"}}, session_id="s1")
             for i in range(3)]
    assert only(run(lookups + other), "retry_loop") == []
    assert len(only(run([*lookups, call(3)]), "retry_loop")) == 1, "a fourth call of the same tool is a loop"


def test_argument_key_order_does_not_make_a_call_different() -> None:
    events = [call(i, {"a": 1, "b": 2} if i % 2 else {"b": 2, "a": 1}) for i in range(4)]
    assert len(only(run(events), "retry_loop")) == 1


def test_identical_calls_spread_beyond_the_window_do_not_fire() -> None:
    assert only(run([call(i * 120) for i in range(6)]), "retry_loop") == []


def test_a_loop_that_goes_on_fires_again_once_per_window() -> None:
    findings = only(run([call(i * 30) for i in range(25)]), "retry_loop")  # 12 minutes of calls, 5m window
    assert [f.ts.strftime("%M:%S") for f in findings] == ["01:30", "06:30", "11:30"]


def test_calls_without_a_session_are_keyed_by_agent() -> None:
    [f] = only(run([call(i, session=None) for i in range(4)]), "retry_loop")
    assert f.evidence["session"].startswith("(none")


BIG = 2**70  # beyond 64 bits: orjson refuses it, and the canonical form comes from the json fallback


def test_identical_calls_with_an_integer_beyond_64_bits_are_one_call_whatever_their_key_order() -> None:
    calls = [call(i, {"n": BIG, "user": "bob"} if i % 2 else {"user": "bob", "n": BIG}) for i in range(4)]
    assert [f.rule for f in run(calls) if f.rule == "retry_loop"] == ["retry_loop"]


def test_calls_that_differ_only_in_an_integer_beyond_64_bits_are_different_calls() -> None:
    assert only(run([call(i, {"n": BIG + i, "user": "bob"}) for i in range(4)]), "retry_loop") == []


@pytest.mark.parametrize(("arguments", "form"), [
    ({"user": "zoë", "n": 1}, '{"n":1,"user":"zoë"}'),
    ({"user": "zoë", "n": BIG}, '{"n":1180591620717411303424,"user":"zoë"}'),  # the fallback's form
])
def test_the_arguments_fingerprint_hashes_their_canonical_utf8_json(arguments: dict[str, object], form: str) -> None:
    """Sorted keys, no spaces, UTF-8 as written: the same form whichever encoder made it."""
    [f] = only(run([call(i, arguments) for i in range(4)]), "retry_loop")
    assert f.evidence["arguments_sha256"] == hashlib.sha256(form.encode()).hexdigest()[:16]


# --- tool_burst ------------------------------------------------------------------------------------------------


def test_more_tool_calls_than_the_limit_within_the_window_fire() -> None:
    events = [tool("iam-agent", "directory.lookup_user", i, tool={"arguments": {"n": i}}) for i in range(6)]
    [f] = only(run(events), "tool_burst")
    assert (f.target, f.event_id) == ("iam-agent", events[5].event_id)


def test_calls_at_the_limit_or_spread_out_do_not_fire() -> None:
    at_limit = [tool("iam-agent", "directory.lookup_user", i, tool={"arguments": {"n": i}}) for i in range(5)]
    spread = [tool("iam-agent", "directory.lookup_user", i * 20, tool={"arguments": {"n": i}}) for i in range(10)]
    assert only(run(at_limit), "tool_burst") == []
    assert only(run(spread), "tool_burst") == []


def test_bursts_are_counted_per_agent() -> None:
    events = [tool(a, "kb.search", i) for i in range(2) for a in ("help-bot", "iam-agent")]
    assert only(run(events), "tool_burst") == []


def test_windows_follow_event_time_not_arrival_order_or_wall_clock() -> None:
    events = [tool("help-bot", "kb.search", at) for at in (0, 10, 20)]
    assert [f.rule for f in run(events)] == ["tool_burst"]
    assert run([tool("help-bot", "kb.search", at) for at in (0, 61, 122)]) == []


# --- every rule per event --------------------------------------------------------------------------------------


def test_every_rule_is_evaluated_for_an_event_with_no_first_match_shadowing() -> None:
    pol = with_scope("helpdesk", limits={"tool_calls": {"max": 1, "window": "1m"},
                                         "identical_retries": {"max": 1, "window": "1m"}})
    e1 = tool("help-bot", "shell.exec", 0, resource={"type": "dataset", "id": "s3://raw/x"})
    e2 = tool("help-bot", "shell.exec", 1, resource={"type": "dataset", "id": "s3://raw/x"})
    rules = sorted(f.rule for f in run([e1, e2], pol) if f.event_id == e2.event_id)
    assert rules == ["data_out_of_scope", "retry_loop", "tool_burst", "unapproved_tool"]


def test_a_finding_carries_the_live_policy_sha_and_its_frozen_owners() -> None:
    [f] = run([tool("iam-agent", "x")])
    assert f.policy_sha256 == P.sha256
    assert (f.owners.responder.id, f.owners.responder.contact("slack")) == ("iam-team", "C0IAM")
    assert (f.owners.business_owner and f.owners.business_owner.id, f.owners.data_owner and f.owners.data_owner.id) == (
        "marco", "data-gov")
    assert [(s.owner.id, s.ack_timeout.total_seconds()) for s in f.owners.escalation] == [("iam-team", 300),
                                                                                         ("ciso", 600)]


# --- the Detector contract: nothing to report is an empty list -------------------------------------------------

S = scoped()  # the provisioner with a tool catalogue, argument constraints and the untrusted-flow rule
READ_MAIL: dict[str, Any] = {"tool": {"name": "mail.read"}, "session_id": "s1", "event_id": "read-1"}
# Each built-in detector's early exits, one case per branch: (rule, why it ignores the events, policy, events,
# agents quarantined since T0 + 60 s). Every event of a case must give `[]`.
IGNORED: list[tuple[str, str, Policy, list[ActivityEvent], tuple[str, ...]]] = [
    ("unowned_agent", "a listed agent", P, [ev("prompt", "help-bot")], ()),
    ("unapproved_tool", "not a tool call", P, [ev("prompt", "help-bot")], ()),
    ("unapproved_tool", "no workflow, so no scope", P, [tool("ghost", "shell.exec")], ()),
    ("unapproved_tool", "an approved tool", P, [tool("help-bot", "kb.search")], ()),
    ("secret_access", "no workflow, so no grant", P,
     [ev("secret_access", "ghost", resource={"type": "secret", "id": "vault://x"})], ()),
    ("secret_access", "no secret read", P, [ev("prompt", "iam-agent")], ()),
    ("secret_access", "a granted secret", P,
     [ev("secret_access", "iam-agent", resource={"type": "secret", "id": "vault://iam/writer"})], ()),
    ("data_out_of_scope", "no resource", P, [ev("prompt", "iam-agent")], ()),
    ("data_out_of_scope", "data in scope", P,
     [ev("data_access", "iam-agent", resource={"type": "dataset", "id": "ldap://people/bob",
                                              "classification": "internal"})], ()),
    ("quarantine_breach", "an agent not quarantined", P, [ev("prompt", "iam-agent")], ("help-bot",)),
    ("quarantine_breach", "activity before the quarantine", P, [ev("prompt", "iam-agent", at=59)], ("iam-agent",)),
    ("retry_loop", "not a tool call", P, [ev("prompt", "iam-agent")], ()),
    ("retry_loop", "no identical-retry limit", P, [tool("help-bot", "kb.search")] * 2, ()),
    ("retry_loop", "within the limit", P, [tool("iam-agent", "directory.lookup_user", at=i) for i in range(3)], ()),
    ("tool_burst", "not a tool call", P, [ev("prompt", "iam-agent")], ()),
    ("tool_burst", "no tool-call limit", P, [tool("rag-bot", "retrieval.search", at=i) for i in range(3)], ()),
    ("tool_burst", "within the limit", P, [tool("iam-agent", "directory.lookup_user", at=i) for i in range(5)], ()),
    ("unreviewed_identity_change", "an approval, and the change it covers", P,
     [approval("iam-agent", "jordan", "user:bob"), change("iam-agent", "user:bob", at=60)], ()),
    ("unreviewed_identity_change", "no identity change", P, [ev("prompt", "iam-agent")], ()),
    ("unreviewed_identity_change", "an operation needing no approval", P,
     [change("iam-agent", "user:bob", operation="revoke_role")], ()),
    ("argument_out_of_scope", "not a tool call", S, [ev("prompt", "iam-agent")], ()),
    ("argument_out_of_scope", "a tool without constraints", S, [tool("iam-agent", "directory.lookup_user")], ()),
    ("argument_out_of_scope", "arguments within the constraints", S,
     [tool("iam-agent", "pay", tool={"arguments": {"payee": "acme", "amount": 10}})], ()),
    ("untrusted_flow", "not a tool call", S, [ev("prompt", "iam-agent")], ()),
    ("untrusted_flow", "no untrusted input yet", S, [tool("iam-agent", "shell", session_id="s1")], ()),
    ("untrusted_flow", "untrusted input, its redelivery, then a harmless call", S,
     [ev("tool_call", "iam-agent", **READ_MAIL), ev("tool_call", "iam-agent", **READ_MAIL),
      tool("iam-agent", "directory.lookup_user", at=1, session_id="s1")], ()),
    ("provenance", "an unowned agent's call", S, [tool("nobody", "pay", tool={"arguments": {"payee": "x"}})], ()),
    ("provenance", "a request, a read, then a call that is not sensitive", S,
     [ev("prompt", "iam-agent", session_id="s1", content={"prompt": "hi"}),
      tool("iam-agent", "mail.read", session_id="s1", tool={"result": "write to x@evil.example"}),
      tool("iam-agent", "directory.lookup_user", at=1, session_id="s1", tool={"arguments": {"u": "x@evil.example"}})],
     ()),
    ("provenance", "a sensitive call in a session that read nothing", S,
     [tool("iam-agent", "mail.send", session_id="s9", tool={"arguments": {"to": ["x@evil.example"]}})], ()),
]


@pytest.mark.parametrize(("rule", "why", "pol", "events", "quarantined"), IGNORED,
                         ids=[f"{rule}: {why}" for rule, why, *_ in IGNORED])
def test_a_detector_with_nothing_to_report_returns_an_empty_list(
    rule: str, why: str, pol: Policy, events: list[ActivityEvent], quarantined: tuple[str, ...]
) -> None:
    """The protocol promises `list[Finding]`: callers such as the approval judge iterate the result directly."""
    marks = {a: QuarantineMark(agent_id=a, since=T0 + timedelta(seconds=60)) for a in quarantined}
    detector = REGISTRY[rule]
    state = detector.new_state()
    for e in events:
        assert detector.detect(Context.of(e, pol, marks), state) == [], f"{rule} on {e.kind.value} ({why})"


def test_every_builtin_detector_has_its_early_exits_in_the_contract_cases() -> None:
    assert {rule for rule, *_ in IGNORED} == set(REGISTRY)
