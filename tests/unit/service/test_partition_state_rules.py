"""PartitionStates' own rules, without a broker: a rebuild that needs no read, the bounded list of recent rebuilds,
a broker that cannot be reached (the state is partial, and says so), and the continuity check's exact bound."""

from __future__ import annotations

import pytest

from service.runtime.state_rebuild import PartitionStates, RebuildLimits, Rebuilt
from streams.detectors import DetectorState, replay
from streams.ingest import FORMATS
from tests.support.matrix_builder import policy
from warden.contract.events import ActivityEvent
from warden.telemetry import metrics

P = policy()
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: connection refused at once


def _states(**limits: float) -> PartitionStates:
    return PartitionStates(UNREACHABLE, FORMATS["native"], 1 << 20, lambda: P,
                           RebuildLimits(**limits) if limits else None)  # type: ignore[arg-type]


def _outcome(**fields: object) -> str:
    return Rebuilt("t", 0, 5, **fields).outcome  # type: ignore[arg-type]


def test_a_rebuild_reports_incomplete_before_cut_off_before_complete() -> None:
    assert _outcome() == "complete"
    assert _outcome(cut_off=True) == "cut_off"
    assert _outcome(incomplete="why") == "incomplete"
    assert _outcome(incomplete="why", cut_off=True) == "incomplete"


async def test_a_partition_whose_first_event_is_at_offset_0_is_rebuilt_without_reading() -> None:
    states = _states()
    complete = metrics.total(metrics.REBUILDS)
    state = await states.rebuild("activity", 3, 0, record_ts=None)
    [report] = states.rebuilt
    assert (report.topic, report.partition, report.target, report.start, report.messages, report.outcome) == (
        "activity", 3, 0, None, 0, "complete")
    assert ("activity", 3) in states and states.current("activity", 3, 0) is state
    assert state.first_time("activity", 3, 0)  # nothing below offset 0 to mark
    assert metrics.total(metrics.REBUILDS) == complete + 1
    assert 0 <= report.seconds < 5, report.seconds


async def test_only_the_last_32_rebuilds_are_kept_newest_last() -> None:
    states = _states()
    for partition in range(40):
        await states.rebuild("activity", partition, 0, record_ts=None)
    assert [r.partition for r in states.rebuilt] == list(range(8, 40))


async def test_a_broker_that_cannot_be_reached_leaves_a_partial_state_marked_applied_and_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    states = _states(max_seconds=5.0)
    state = await states.rebuild("activity", 0, 7, record_ts=None)
    [report] = states.rebuilt
    assert report.outcome == "incomplete" and report.incomplete and report.events == 0
    assert state.applied("activity", 0) == 6  # below the event: judged by whoever committed it
    assert not state.first_time("activity", 0, 6) and state.first_time("activity", 0, 7)
    assert "INCOMPLETE" in caplog.text and any(r.levelname == "WARNING" for r in caplog.records)


def _holding(applied: int | None) -> tuple[PartitionStates, DetectorState]:
    states = _states()
    state = DetectorState()
    if applied is not None:
        state.first_time("activity", 0, applied)
    states._states[("activity", 0)] = state
    states.on_revoked()
    states.on_assigned([("activity", 0)])
    return states, state


@pytest.mark.parametrize(("offset", "kept"), [(10, True), (11, False), (3, True)])
def test_a_kept_partition_is_continuous_only_up_to_the_offset_after_the_last_applied(offset: int,
                                                                                    kept: bool) -> None:
    states, state = _holding(applied=9)
    assert (states.current("activity", 0, offset) is state) is kept
    assert (("activity", 0) in states) is kept


def test_a_kept_partition_that_applied_nothing_yet_is_kept() -> None:
    states, state = _holding(applied=None)
    assert states.current("activity", 0, 500) is state


def test_a_partition_not_kept_through_a_rebalance_is_not_checked_and_an_unknown_one_has_no_state() -> None:
    states, state = _holding(applied=9)
    other = DetectorState()
    states._states[("activity", 1)] = other  # arrived after the rebalance (rebuilt here): nothing to verify
    assert states.current("activity", 1, 99) is other
    assert states.current("activity", 2, 0) is None
    assert states.current("activity", 0, 10) is state


def test_a_new_assignment_drops_exactly_the_partitions_that_moved_away() -> None:
    states = _states()
    for p in range(3):
        states._states[("activity", p)] = DetectorState()
    states.on_revoked()
    states.on_assigned([("activity", 0), ("activity", 2), ("activity", 9)])
    assert [("activity", p) in states for p in range(3)] == [True, False, True]
    assert ("activity", 9) not in states  # assigned, but nothing is held for it until it is rebuilt


async def test_the_approval_path_finds_a_session_in_whichever_partition_read_it_and_none_elsewhere() -> None:
    states = _states()
    await states.rebuild("activity", 0, 0, record_ts=None)  # a partition that read nothing of that session
    second = await states.rebuild("activity", 1, 0, record_ts=None)
    prompt = ActivityEvent.model_validate({
        "event_id": "p-1", "ts": "2026-12-08T00:00:00+00:00", "kind": "prompt", "agent": {"id": "iam-agent"},
        "session_id": "s-1", "content": {"prompt": "Answer ann@example.com about the invoice."}})
    replay(prompt, P, second)
    found = states.provenance("iam-agent", "s-1")
    assert found is not None and len(found) > 0
    assert states.provenance("iam-agent", "s-2") is None
    assert states.provenance("other-agent", "s-1") is None
