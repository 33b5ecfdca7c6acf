"""The labelled sessions replayed through the bundled matrix: every benign session stays quiet, every hijacked one
raises the rules that describe its attack, and the figures per rule meet the bar."""

from __future__ import annotations

import pytest

from tests.support.data.sessions.generate import build
from tests.support.session_quality import labels, replay_sessions, score

TRUTH = labels()
FIRED, INVALID = replay_sessions()


def test_the_committed_set_is_what_the_generator_writes() -> None:
    events, truth = build()
    assert truth == TRUTH
    assert len([s for s in TRUTH.values() if s["verdict"] == "benign"]) >= 40
    assert len([s for s in TRUTH.values() if s["verdict"] == "hijacked"]) >= 40
    assert INVALID == 0 and len(events) > 250


@pytest.mark.parametrize("session", sorted(s for s, v in TRUTH.items() if v["verdict"] == "benign"))
def test_a_benign_session_raises_no_routed_finding(session: str) -> None:
    assert FIRED.get(session, set()) == set()


@pytest.mark.parametrize("session", sorted(s for s, v in TRUTH.items() if v["verdict"] == "hijacked"))
def test_a_hijacked_session_raises_every_rule_that_describes_it(session: str) -> None:
    assert set(TRUTH[session]["expect"]) <= FIRED.get(session, set())


def test_recall_and_false_alerts_per_rule_meet_the_bar() -> None:
    scores = {s.rule: s for s in score(TRUTH, FIRED)}
    for rule in ("argument_out_of_scope", "untrusted_flow", "unreviewed_identity_change", "secret_access",
                 "secret-then-external"):
        assert scores[rule].expected >= 5, rule
    assert all(s.recall >= 0.98 for s in scores.values()), scores
    assert all(s.false_alert_rate <= 0.01 for s in scores.values()), scores
