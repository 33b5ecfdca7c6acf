"""Session flow rules: the built-in untrusted_flow and a workflow's own, with bounded, replayable session state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from streams.detectors import DetectorState, detect, lookback, replay
from streams.detectors.sessions import SessionTrail
from tests.support.matrix_builder import T0, tool
from tests.support.metrics import metric_value
from tests.support.scope_builder import scoped
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.policy import Policy
from warden.telemetry import metrics

POLICY = scoped()


def call(name: str, at: float = 0.0, session: str = "s1", agent: str = "iam-agent", **arguments: Any) -> ActivityEvent:
    return tool(agent, name, at, tool={"arguments": arguments}, session_id=session)


def flows(events: list[ActivityEvent], pol: Policy = POLICY, state: DetectorState | None = None) -> list[Finding]:
    state = state or DetectorState()
    rules = {"untrusted_flow", "payment-after-secret"}
    return [f for e in events for f in detect(e, pol, state) if f.rule in rules]


READ = "mail.read"


def test_a_sensitive_call_after_untrusted_input_is_a_finding_with_both_calls_in_evidence() -> None:
    [f] = flows([call(READ), call("shell", 5, cmd="id")])
    assert f.rule == "untrusted_flow" and f.target == "shell"
    assert (f.evidence["after_tool"], f.evidence["steps_since"], f.evidence["seconds_since"]) == (READ, "1", "5")
    assert f.frameworks[:2] == ["OWASP-ASI01", "OWASP-LLM01"]


def test_severity_follows_the_risk_tier_not_the_agentic_raise() -> None:
    assert flows([call(READ), call("shell", 1)])[0].severity.value == "critical"  # critical tier
    pol = scoped(workflow={"risk": "low"})
    assert flows([call(READ), call("shell", 1)], pol)[0].severity.value == "medium"


def test_the_same_call_without_untrusted_input_before_it_is_fine() -> None:
    assert flows([call("directory.lookup_user"), call("shell", 5)]) == []


def test_unless_lets_a_payment_to_a_known_payee_through_and_not_an_unknown_one() -> None:
    assert flows([call(READ), call("pay", 5, payee="acme", amount=10)]) == []
    [f] = flows([call(READ), call("pay", 5, payee="mallory", amount=10)])
    assert f.evidence["target"] == "mallory"


def test_beyond_n_steps_or_t_seconds_the_flow_no_longer_applies() -> None:
    between = [call("directory.lookup_user", i) for i in range(1, 4)]  # uncatalogued calls count as steps
    assert flows([call(READ), *between, call("shell", 5)]) == []  # 4 steps > within_steps 3
    assert len(flows([call(READ), *between[:2], call("shell", 5)])) == 1  # 3 steps
    assert flows([call(READ), call("shell", 601)]) == []  # > 10m
    assert flows([call(READ, 100), call("shell", 50)]) == []  # before the read in event time


def test_the_time_window_includes_both_of_its_ends() -> None:
    assert len(flows([call(READ, 5), call("shell", 5)])) == 1  # the same instant as the read
    assert len(flows([call(READ), call("shell", 600)])) == 1  # exactly 10m after it


def test_a_flow_with_several_after_categories_measures_from_the_latest_of_them() -> None:
    rule = {"id": "pay-after-either", "after": ["untrusted_input", "secret_store"], "then": ["payment"],
            "within_steps": 2}
    pol = scoped({"flows": [rule]})

    def own(first: ActivityEvent, second: ActivityEvent) -> list[tuple[str, str]]:
        state = DetectorState()
        events = [first, second, call("directory.lookup_user", 2), call("pay", 3, payee="acme", amount=5)]
        found = [f for e in events for f in detect(e, pol, state) if f.rule == "pay-after-either"]
        return [(f.evidence["after_tool"], f.evidence["steps_since"]) for f in found]

    vault = call("vault.read", 0, path="vault://iam/k")
    assert own(vault, call(READ, 1)) == [(READ, "2")]  # the secret read is 3 steps back: too far
    assert own(call(READ, 0), call("vault.read", 1, path="vault://iam/k")) == [("vault.read", "2")]


def test_a_session_that_read_no_untrusted_input_takes_no_place_in_the_trail() -> None:
    state = DetectorState()
    trail = state.by_rule["untrusted_flow"] = SessionTrail(max_sessions=1)
    events = [call(READ, session="a"), call("shell", 1, session="b"), call("directory.lookup_user", 2, session="c")]
    assert flows(events, state=state) == []
    assert len(trail) == 1 and trail.get(("iam-agent", "a")) is not None
    assert len(flows([call("shell", 3, session="a")], state=state)) == 1, "session a was not evicted by b or c"


def test_sessions_are_separate_and_a_repeated_read_restarts_the_window() -> None:
    assert flows([call(READ, session="a"), call("shell", 1, session="b")]) == []
    steps = [call("directory.lookup_user", i) for i in range(1, 5)]
    assert len(flows([call(READ), *steps, call(READ, 5), call("shell", 6)])) == 1


def test_a_redelivered_event_is_not_a_second_step() -> None:
    read = call(READ)
    step = call("directory.lookup_user", 1)
    assert len(flows([read, step, step, step, step, call("shell", 5)])) == 1  # 2 steps, not 5


def test_shadow_mode_records_without_routing_and_disabled_stops_only_the_builtin() -> None:
    shadow = scoped(top={"rules": {"builtin": {"untrusted_flow": {"mode": "shadow"}}}})
    assert flows([call(READ), call("shell", 1)], shadow)[0].shadow is True
    own = {"flows": [{"id": "payment-after-secret", "after": ["secret_store"], "then": ["payment"],
                      "within_steps": 2, "severity": "low", "mode": "shadow"}]}
    off = scoped(own, top={"rules": {"builtin": {"untrusted_flow": {"enabled": False}}}})
    events = [call(READ), call("shell", 1), call("vault.read", 2, path="vault://iam/k"),
              call("pay", 3, payee="acme", amount=5)]
    [f] = flows(events, off)
    assert (f.rule, f.severity.value, f.shadow) == ("payment-after-secret", "low", True)


def test_state_rebuilt_by_replay_judges_the_next_event_as_the_live_state_did() -> None:
    history = [call(READ), call("directory.lookup_user", 1)]
    rebuilt = DetectorState()
    for e in history:
        replay(e, POLICY, rebuilt)
    assert len(flows([call("shell", 2)], state=rebuilt)) == 1


def test_lookback_covers_the_flow_windows() -> None:
    pol = scoped({"untrusted_flow": {"within": "90m"}})
    assert lookback(pol) == timedelta(minutes=90)


def _evicted(reason: str) -> float:
    return metric_value(metrics.FLOW_SESSIONS_EVICTED, reason=reason)


def test_the_trail_is_capped_and_expires_idle_sessions_counting_both() -> None:
    trail = SessionTrail(max_sessions=2, ttl=timedelta(minutes=5))
    cap, ttl = _evicted("cap"), _evicted("ttl")
    for i, key in enumerate(["a", "b", "c"]):
        trail.step(("agent", key), T0 + timedelta(seconds=i), f"e{i}")
    assert len(trail) == 2 and trail.get(("agent", "a")) is None
    assert _evicted("cap") == cap + 1
    trail.step(("agent", "d"), T0 + timedelta(minutes=10), "e9")
    assert len(trail) == 1 and _evicted("ttl") == ttl + 2


def test_a_session_idles_from_its_latest_call_and_exactly_the_ttl_is_not_too_long() -> None:
    trail = SessionTrail(ttl=timedelta(minutes=5))
    trail.step(("agent", "a"), T0, "e1")
    trail.step(("agent", "a"), T0 + timedelta(minutes=4), "e2")
    trail.step(("agent", "a"), T0 + timedelta(minutes=1), "e3")  # a late event does not make it idle for longer
    trail.step(("agent", "b"), T0 + timedelta(minutes=9), "e4")  # `a` idle exactly 5 minutes: kept
    assert trail.get(("agent", "a")) is not None
    trail.step(("agent", "b"), T0 + timedelta(minutes=9, seconds=1), "e5")
    assert trail.get(("agent", "a")) is None and len(trail) == 1


def test_a_workflow_flow_rule_carries_its_own_frameworks_or_else_the_built_ins() -> None:
    rule = {"id": "payment-after-secret", "after": ["secret_store"], "then": ["payment"], "within_steps": 2}
    events = [call("vault.read", 0, path="vault://iam/k"), call("pay", 1, payee="acme", amount=5)]
    [own] = flows(events, scoped({"flows": [{**rule, "frameworks": ["OWASP-ASI03"]}]}))
    assert own.frameworks[0] == "OWASP-ASI03" and "OWASP-ASI01" not in own.frameworks
    [default] = flows(events, scoped({"flows": [rule]}))
    assert default.frameworks[:2] == ["OWASP-ASI01", "OWASP-LLM01"]
