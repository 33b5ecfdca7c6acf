"""Hostile input through a real worker: a poisoned batch costs only its bad elements, every event is counted once,
and a dead letter keeps its token sealed until `warden dlq replay` opens it and re-ingests it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from service.cli.dlq import REPLAYED_FROM, replay
from service.runtime.catalogue import load
from service.runtime.ingest.dead_letters import Outgoing
from service.runtime.ingest.judge import BatchJudge
from service.runtime.inputs import NativeInput
from service.runtime.policy_holder import PolicyHolder
from service.runtime.settings import Settings
from service.runtime.state_rebuild import PartitionStates
from service.runtime.topics import ensure_topics
from service.runtime.worker import Runtime
from streams.ingest import FORMATS
from tests.support.kafka_helpers import event, has_marker, headers, produce, read_topic
from warden.contract.findings import Finding
from warden.telemetry import metrics

pytestmark = pytest.mark.integration

TOKEN = "tok-Vq3Xn8Rb2Lw7Kd5P-planted"


def _splice(e: dict[str, object], extra: str) -> str:
    return "{" + extra + ", " + json.dumps(e)[1:]


async def test_a_poisoned_batch_dead_letters_each_bad_element_by_index_and_detects_the_good_ones(
    worker: Runtime,
) -> None:
    s = worker.settings
    good = [event("billing-agent-1", tool={"name": "shell.exec"}) for _ in range(2)]
    bad = {
        1: ("too_deep", "[" * 10_000 + "]" * 10_000),
        2: ("lone_surrogate", _splice(event("billing-agent-1", kind="prompt"), '"x": "\\ud800"')),
        3: ("duplicate_key", _splice(event("billing-agent-1", kind="prompt"), '"kind": "bogus"')),
        4: ("non_finite_number", _splice(event("billing-agent-1", kind="prompt"), '"x": NaN')),
    }
    batch = "[" + ", ".join([json.dumps(good[0]), *(text for _, text in bad.values()), json.dumps(good[1])]) + "]"
    events_before = metrics.total(metrics.EVENTS)
    # End markers behind the batch, on its partition: a finding and a dead letter that nothing is still to follow.
    marker = event("billing-agent-1", tool={"name": "shell.exec"})
    poison = event("billing-agent-1", kind="prompt", ts="not a time")
    await produce(worker.bootstrap, s.topic_activity, [(b"billing-agent-1", batch.encode()), *(
        (b"billing-agent-1", json.dumps(e).encode()) for e in (marker, poison))])
    dead = await read_topic(worker.bootstrap, s.topic_dlq, until=has_marker([poison["event_id"]],
                                                                             s.sealer().open_bytes))
    assert sorted((int(headers(d)["warden.batch_index"]), headers(d)["warden.reason_code"]) for d in dead[:-1]) == [
        (i, code) for i, (code, _) in bad.items()]
    findings = await read_topic(worker.bootstrap, s.topic_findings, until=has_marker([marker["event_id"]]))
    assert sorted(Finding.model_validate_json(f.value).event_id for f in findings) == sorted(
        [*(g["event_id"] for g in good), marker["event_id"]])
    assert metrics.total(metrics.EVENTS) - events_before == 3  # the batch's two good events and the marker


class _CrashesFor(dict):  # type: ignore[type-arg]
    """The policy's agent index, failing for one agent: a detector bug that only one event of a batch trips."""

    def get(self, key: object, default: object = None) -> object:
        if key == "crash-agent":
            raise RuntimeError("detector bug")
        return super().get(key, default)


async def test_one_event_failing_detection_costs_only_itself_and_every_event_is_counted_once(
    worker_settings: Settings, kafka_bootstrap: str
) -> None:
    s = worker_settings
    await ensure_topics(kafka_bootstrap, [s.topic_activity], 1)
    policy = load(s.policy)
    policy.assignments = _CrashesFor(policy.assignments)
    holder = PolicyHolder(policy)
    decode = FORMATS["native"]
    states = PartitionStates(kafka_bootstrap, decode, s.max_message_bytes, lambda: holder.current)
    judge = BatchJudge(s, holder, {s.topic_activity: NativeInput(decode, s.max_message_bytes)},
                       {s.topic_activity: states}, sealer=None,
                       dlq_sealer=s.sealer())
    raw = json.dumps([event("billing-agent-1", tool={"name": "shell.exec"}), event("crash-agent", kind="prompt"),
                      {"event_id": "half"}]).encode()
    record = SimpleNamespace(topic=s.topic_activity, partition=0, offset=0, timestamp=time.time() * 1000,
                             key=b"billing-agent-1", value=raw)
    before = metrics.total(metrics.EVENTS)
    out: list[Outgoing] = []
    assert await judge.judge(record, out) == 2
    assert await judge.judge(record, out) == 0  # read again: applied already
    judge.count_events()  # as the ingest loop does after each batch
    assert metrics.total(metrics.EVENTS) - before == 2, "two valid events, however often the message was read"
    dead = [(dict(o.headers)["warden.reason_code"], dict(o.headers)["warden.batch_index"]) for o in out
            if o.topic == s.topic_dlq]
    assert dead == [(b"missing_field", b"2"), (b"processing_error", b"1")], "each bad element alone, once"
    assert [o.finding.rule for o in out if o.finding] == ["unapproved_tool"]


async def test_a_dead_letter_keeps_its_token_sealed_and_replay_reingests_just_its_element(
    worker: Runtime, tmp_path: Path
) -> None:
    s = worker.settings
    invalid = event("billing-agent-1", kind="secret_access", ts="yesterday",
                    resource={"type": "secret", "id": "vault://x"}, credential={"id": "k1", "token": TOKEN})
    batch = json.dumps([event("billing-agent-1", kind="prompt"), invalid]).encode()
    await produce(worker.bootstrap, s.topic_activity, [(b"billing-agent-1", batch)])
    [dead] = await read_topic(worker.bootstrap, s.topic_dlq, expect=1)
    h = headers(dead)
    assert (h["warden.reason_code"], h["warden.batch_index"], h["warden.sealed"]) == ("invalid_event", "1", "fernet")
    assert TOKEN.encode() not in dead.value and all(TOKEN not in v for v in h.values())
    assert s.sealer().open_bytes(dead.value) == batch

    dry = await replay(s, worker.bootstrap, group="replay-test", dry_run=True, idle_s=1.0)
    assert [(o.reason_code, o.action) for o in dry] == [("invalid_event", "would_replay")]
    [outcome] = await replay(s, worker.bootstrap, group="replay-test", idle_s=1.0)
    assert (outcome.action, outcome.to) == ("replayed", s.topic_activity)
    again = await replay(s, worker.bootstrap, group="replay-test", idle_s=1.0)  # only what failed again since
    assert outcome.offset not in [o.offset for o in again], "a dead letter is replayed once per group"
    activity = await read_topic(worker.bootstrap, s.topic_activity, expect=2)
    replayed = next(r for r in activity if any(k == REPLAYED_FROM for k, _ in r.headers or ()))
    assert json.loads(replayed.value) == invalid and replayed.key == b"billing-agent-1"

    other_key = s.model_copy(update={"seal_key": SecretStr("A" * 43 + "=")})  # a worker with another key cannot open it
    refused = await replay(other_key, worker.bootstrap, group="replay-other-key", idle_s=1.0)
    assert refused and all(r.action == "held" and "cannot be opened" in r.note for r in refused)
