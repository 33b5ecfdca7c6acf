"""A stateful detector counts an event at most once, whatever is replayed (no broker): the offsets a state has
applied, the windows' and approvals' idempotence by event id, replaying without findings, which partition states a
worker keeps through a rebalance, and the worker's shell resuming a retried message rather than skipping it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError

import streams.detectors
from service.runtime.ingest.dead_letters import Outgoing
from service.runtime.ingest.deliveries import Deliveries, Stopping
from service.runtime.ingest.judge import BatchJudge
from service.runtime.inputs import NativeInput
from service.runtime.policy_holder import PolicyHolder
from service.runtime.settings import Settings
from service.runtime.state_rebuild import PartitionStates
from streams.detectors import DetectorState, detect, lookback, replay
from streams.detectors.base import RuleInfo, no_lookback, stateless
from streams.detectors.windows import WindowCounter
from streams.ingest import FORMATS
from tests.support.matrix_builder import T0, approval, change, policy, tool, with_scope
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.contract.matrix import Limit, Severity

P = policy()  # provisioner (iam-agent): 5 tool calls per minute, 3 identical calls per 5 minutes


def rules(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


def judge(log: list[tuple[int, ActivityEvent]], state: DetectorState, partition: int = 0) -> list[Finding]:
    """What the worker's shell does with each delivered message: judge it only the first time."""
    return [f for offset, e in log if state.first_time("activity", partition, offset) for f in detect(e, P, state)]


# --- offsets applied -------------------------------------------------------------------------------------------


def test_an_offset_is_applied_once_and_nothing_at_or_below_it_again() -> None:
    state = DetectorState()
    assert state.applied("activity", 0) is None
    assert [state.first_time("activity", 0, o) for o in (0, 1, 2)] == [True, True, True]
    assert [state.first_time("activity", 0, o) for o in (1, 2, 0)] == [False, False, False]
    assert state.applied("activity", 0) == 2
    assert state.first_time("activity", 0, 5)  # a gap is fine: offsets need not be contiguous
    assert not state.first_time("activity", 0, 4)


def test_offsets_are_tracked_per_topic_and_partition() -> None:
    state = DetectorState()
    assert state.first_time("activity", 0, 10)
    assert state.first_time("activity", 1, 3)
    assert state.first_time("other", 0, 3)
    assert (state.applied("activity", 0), state.applied("activity", 1), state.applied("other", 0)) == (10, 3, 3)


def test_a_kept_partition_re_delivered_from_its_committed_offset_raises_nothing_new() -> None:
    calls = [tool("iam-agent", "directory.lookup_user", at=i, tool={"arguments": {"n": i}}) for i in range(5)]
    log = list(enumerate(calls))
    state = DetectorState()
    assert judge(log, state) == []  # exactly at the limit
    assert judge(log[2:], state) == []  # a rebalance re-delivers offsets 2.. : already applied


def test_a_replay_from_beyond_what_a_window_keeps_would_count_twice_without_the_offset_check() -> None:
    """Exactly 5 calls in every minute: a window keeps 6 entries, so a replay of older events is not among them."""
    calls = [tool("iam-agent", "directory.lookup_user", at=12 * i, tool={"arguments": {"n": i}}) for i in range(30)]
    log = list(enumerate(calls))
    state = DetectorState()
    assert judge(log, state) == []
    assert judge(log[10:], state) == []  # re-delivered: skipped by offset
    unguarded = DetectorState()
    assert [f for _, e in log for f in detect(e, P, unguarded)] == []
    assert "tool_burst" in rules([f for _, e in log[10:] for f in detect(e, P, unguarded)])  # what the check prevents


# --- windows: idempotent by event id, bounded --------------------------------------------------------------------


LIMIT = Limit(max=2, window=timedelta(minutes=1))


def test_a_window_counts_an_event_id_once() -> None:
    w = WindowCounter()
    assert [w.hit("k", T0, LIMIT, "e1"), w.hit("k", T0, LIMIT, "e1"), w.hit("k", T0, LIMIT, "e2")] == [False] * 3
    assert w.hit("k", T0, LIMIT, "e2") is False  # a producer retry of the last one: still two calls
    assert w.hit("k", T0, LIMIT, "e3") is True  # the third distinct call is over the limit


def test_the_same_event_id_under_another_key_is_counted_there() -> None:
    w = WindowCounter()
    assert not w.hit("a", T0, LIMIT, "e1") and not w.hit("b", T0, LIMIT, "e1")
    assert not w.hit("a", T0, LIMIT, "e2") and w.hit("a", T0, LIMIT, "e3")


def test_a_redelivered_tool_call_neither_fires_a_burst_nor_fires_it_twice() -> None:
    calls = [tool("iam-agent", "directory.lookup_user", at=i, tool={"arguments": {"n": i}}) for i in range(6)]
    state = DetectorState()
    findings = [f for e in [*calls[:5], calls[4], calls[3]] for f in detect(e, P, state)]
    assert findings == []  # five distinct calls and two redeliveries: at the limit, not over it
    [burst] = [f for e in [calls[5], calls[5]] for f in detect(e, P, state)]
    assert (burst.rule, burst.event_id) == ("tool_burst", calls[5].event_id)


def test_a_window_keeps_at_most_limit_plus_one_entries_per_key_with_their_ids() -> None:
    w = WindowCounter()
    for i in range(1000):
        w.hit("k", T0 + timedelta(seconds=i), LIMIT, f"e{i}")
    [window] = w._keys.values()
    assert not isinstance(window, tuple), "a window, not a lone entry"
    assert len(window.entries) == len(window.ids) == LIMIT.max + 1
    assert window.ids == {"e997", "e998", "e999"}


def test_a_limit_lowered_by_a_policy_reload_trims_the_window_and_its_ids() -> None:
    w = WindowCounter()
    assert not any(w.hit("k", T0, Limit(max=5, window=timedelta(minutes=1)), f"e{i}") for i in range(5))
    assert w.hit("k", T0, LIMIT, "e5") is True  # trimmed to the newest 3, all within a minute: over 2
    [window] = w._keys.values()
    assert not isinstance(window, tuple), "a window, not a lone entry"
    assert len(window.entries) == len(window.ids) == 3


def test_a_lone_entry_a_whole_window_older_than_the_next_is_replaced_by_it_not_kept_in_a_window() -> None:
    w = WindowCounter()

    def at(s: float) -> datetime:
        return T0 + timedelta(seconds=s)

    assert not w.hit("k", at(0), LIMIT, "e1") and not w.hit("k", at(60), LIMIT, "e2")
    assert w._keys["k"] == (at(60), "e2"), "e1 can never count with e2 or what follows: no window is made for it"
    assert not w.hit("k", at(60.5), LIMIT, "e3") and w.hit("k", at(61), LIMIT, "e4"), "e2, e3, e4: over"
    assert not w.hit("j", at(0), LIMIT, "e1") and not w.hit("j", at(59.999), LIMIT, "e2")
    j = w._keys["j"]
    assert not isinstance(j, tuple) and [e for e, *_ in j.entries] == [at(0), at(59.999)], "within a window: both kept"


def test_calls_a_whole_window_apart_are_not_within_it_and_a_loop_fires_again_a_whole_window_later() -> None:
    w = WindowCounter()

    def at(s: float) -> datetime:
        return T0 + timedelta(seconds=s)

    assert not w.hit("edge", at(0), LIMIT, "e1") and not w.hit("edge", at(30), LIMIT, "e2")
    assert not w.hit("edge", at(60), LIMIT, "e3"), "three calls, the first exactly a window before the last: not over"
    assert w.hit("edge", at(61), LIMIT, "e4"), "e2, e3, e4 within a minute: over"
    over = [w.hit("edge", at(61 + s), LIMIT, f"f{s}") for s in (1, 59, 60)]
    assert over == [False, False, True], "over the limit all along: it fires again once a whole window has passed"


def test_the_least_recently_used_key_is_forgotten_past_max_keys() -> None:
    w = WindowCounter(max_keys=2)
    w.hit("a", T0, LIMIT, "a1")
    w.hit("b", T0, LIMIT, "b1")
    assert len(w) == 2, "max_keys keys are all kept"
    w.hit("a", T0, LIMIT, "a2")  # a is used again: b is now the least recently used
    w.hit("c", T0, LIMIT, "c1")
    assert len(w) == 2 and list(w._keys) == ["a", "c"]


# --- approvals --------------------------------------------------------------------------------------------------


def test_a_redelivered_approval_does_not_re_arm_one_a_change_has_used() -> None:
    ok = approval("iam-agent", "jordan", "user:bob", at=0)
    events = [ok, change("iam-agent", "user:bob", at=1), ok, change("iam-agent", "user:bob", at=2)]
    state = DetectorState()
    [f] = [f for e in events for f in detect(e, P, state)]
    assert "already used" in f.evidence["reason"]


# --- replay: state without findings -------------------------------------------------------------------------------


def test_replay_builds_the_state_detect_would_and_emits_nothing() -> None:
    calls = [tool("iam-agent", "shell.exec", at=i, tool={"arguments": {"n": i}}) for i in range(6)]
    replayed, detected = DetectorState(), DetectorState()
    for e in calls[:5]:
        # replay returns None by its type; the assertion keeps it emitting nothing should that type ever change
        assert replay(e, P, replayed) is None  # type: ignore[func-returns-value]  # out-of-scope tool: detect would say unapproved_tool; replay nothing
        detect(e, P, detected)
    assert rules(detect(calls[5], P, replayed)) == rules(detect(calls[5], P, detected)) == [
        "unapproved_tool", "tool_burst"]


def test_replay_restores_an_approval_and_what_used_it() -> None:
    state = DetectorState()
    for e in [approval("iam-agent", "jordan", "user:alice"), approval("iam-agent", "jordan", "user:bob"),
              change("iam-agent", "user:bob", at=1)]:
        replay(e, P, state)
    assert detect(change("iam-agent", "user:alice", at=2), P, state) == []
    [f] = detect(change("iam-agent", "user:bob", at=3), P, state)
    assert "already used" in f.evidence["reason"]


def test_replay_skips_a_disabled_rule_as_detect_does() -> None:
    pol = policy(rules={"builtin": {"tool_burst": {"enabled": False}}})
    state = DetectorState()
    for i in range(10):
        replay(tool("iam-agent", "directory.lookup_user", at=i, tool={"arguments": {"n": i}}), pol, state)
    assert len(state.by_rule["tool_burst"]) == 0


def test_the_look_back_is_the_longest_window_of_any_workflow() -> None:
    assert lookback(P) == timedelta(minutes=30)  # every workflow's identity-approval window (the default)
    longer = with_scope("helpdesk", limits={"tool_calls": {"max": 2, "window": "2h"}})
    assert lookback(longer) == timedelta(hours=2)


def test_a_stateful_detector_brings_its_own_look_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new stateful detector is its module (with `lookback`) plus its line in DETECTORS: nothing else to edit."""
    daily = SimpleNamespace(info=RuleInfo("daily_digest", "Daily", Severity.low, ()), new_state=dict,
                            detect=lambda ctx, state: [], lookback=lambda wf: timedelta(days=1))
    monkeypatch.setattr(streams.detectors, "DETECTORS", (*streams.detectors.DETECTORS, daily))
    assert lookback(P) == timedelta(days=1)


def test_a_detector_looks_back_exactly_when_it_keeps_state() -> None:
    for d in streams.detectors.DETECTORS:
        assert (d.new_state is stateless) == (d.lookback is no_lookback), d.info.id


# --- which partition states a worker keeps through a rebalance ---------------------------------------------------


def states_holding(*partitions: int, applied: int = 9) -> PartitionStates:
    states = PartitionStates("unused:9092", FORMATS["native"], 1 << 20, lambda: P)
    for p in partitions:
        state = DetectorState()
        state.first_time("activity", p, applied)
        states._states[("activity", p)] = state
    return states


def test_a_kept_partition_keeps_its_state_and_a_moved_one_drops_it() -> None:
    states = states_holding(0, 1)
    kept = states.current("activity", 0, 10)
    states.on_revoked()
    states.on_assigned([("activity", 0)])
    assert ("activity", 1) not in states  # its new owner rebuilds it; if it comes back, so will this worker
    assert states.current("activity", 0, 5) is kept  # re-delivered from the committed offset: same state


def test_a_kept_partition_that_resumes_past_what_it_applied_is_rebuilt() -> None:
    """Another worker held it meanwhile (this one was dropped from the group): the state here is stale."""
    states = states_holding(0)
    states.on_revoked()
    states.on_assigned([("activity", 0)])
    assert states.current("activity", 0, 25) is None
    assert ("activity", 0) not in states


def test_only_the_first_message_after_a_rebalance_is_checked_for_continuity() -> None:
    states = states_holding(0)
    states.on_revoked()
    states.on_assigned([("activity", 0)])
    state = states.current("activity", 0, 10)
    assert state is not None
    assert states.current("activity", 0, 50) is state  # a gap later (e.g. transaction markers) is not a move


# --- the worker's shell: a retry resumes the message, a re-delivery is skipped -----------------------------------


async def test_a_failed_produce_is_sent_again_alone_and_a_re_delivered_message_is_skipped() -> None:
    calls = [tool("iam-agent", "shell.exec", at=i, tool={"arguments": {"n": i}}) for i in range(2)]
    value = ("[" + ",".join(e.model_dump_json() for e in calls) + "]").encode()
    record = SimpleNamespace(topic="activity", partition=0, offset=0, timestamp=0, key=b"iam-agent", value=value)
    states = PartitionStates("unused:9092", FORMATS["native"], 1 << 20, lambda: P)
    s = Settings(topic_activity="activity")
    judge = BatchJudge(s, PolicyHolder(P), {"activity": NativeInput(FORMATS["native"], 1 << 20)},
                       {"activity": states}, sealer=None, dlq_sealer=s.sealer())
    out: list[Outgoing] = []
    assert await judge.judge(record, out) == 2
    assert [(o.finding.rule, o.finding.event_id) for o in out if o.finding] == [
        ("unapproved_tool", e.event_id) for e in calls]

    sent: list[bytes | None] = []
    refusals = [KafkaConnectionError("broker away")]

    async def send(o: Outgoing) -> asyncio.Future[None]:  # the second record is refused once
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(sent) == 1 and refusals:
            done.set_exception(refusals.pop())
        else:
            sent.append(o.value)
            done.set_result(None)
        return done

    delivered: list[Outgoing] = []
    deliveries = Deliveries(send)
    deliveries.out.extend(out)
    await asyncio.wait_for(deliveries.settle(delivered.append, lambda: False), 10)
    assert sent == [o.value for o in out], "each record delivered once: the one refused, again, alone"
    assert delivered == out

    again: list[Outgoing] = []
    assert await judge.judge(record, again) == 0 and again == []  # re-delivered
    [state] = states._states.values()
    assert len(state.by_rule["tool_burst"]._keys["iam-agent"].entries) == 2  # each call counted once


async def test_a_batch_that_cannot_be_delivered_when_the_worker_stops_is_left_uncommitted() -> None:
    async def refuse(o: Outgoing) -> asyncio.Future[None]:
        raise KafkaConnectionError("broker away")

    deliveries = Deliveries(refuse)
    deliveries.out.append(Outgoing("findings", b"k", b"v"))
    with pytest.raises(Stopping):
        await deliveries.settle(lambda o: None, lambda: True)
