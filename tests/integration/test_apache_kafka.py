"""What only a real Kafka can show: committed positions across a restart, lag from the broker's high watermark,
and a rebalance when a second worker joins. Tansu reports a wrong high watermark (the base offset of the newest
batch + 1), so these run only against Apache Kafka: conftest deselects them, and says so, unless
WARDEN_TEST_KAFKA_BOOTSTRAP is set; .ci/run sets it (tests/support/kafka/pytest_on_apache_kafka.sh)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from service.runtime.ingest.clients import ingest_group
from service.runtime.settings import Settings
from service.runtime.worker import Runtime
from tests.integration.test_cli import _warden
from tests.support.incident_helpers import eventually
from tests.support.isolated_worker import RecordingResponder, isolated_settings, wait_for
from tests.support.kafka_helpers import committed_offsets, end_offsets, event, lag, produce_events, read_to_end
from warden.contract.findings import Finding

pytestmark = [pytest.mark.integration, pytest.mark.apache_kafka]


def strays(run: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Events from agents no workflow owns: exactly one unowned_agent finding each, with no detector state, keyed
    by 16 agent ids so that every partition gets some."""
    return [event(f"stray-{run}-{i % 16}", kind="prompt", content={"prompt": f"p{i}"}) for i in range(start, start + n)]


def ids(events: list[dict[str, Any]]) -> set[str]:
    return {e["event_id"] for e in events}


def handled(*responders: RecordingResponder) -> set[str]:
    return {f.event_id for r in responders for f in r.findings}


async def findings_on_topic(s: Settings) -> Counter[str]:
    """How often each event id has a finding on the findings topic, read to its end (no worker writes to it)."""
    records = await read_to_end(s.kafka_bootstrap or "", s.topic_findings)
    return Counter(Finding.model_validate_json(r.value).event_id for r in records)


async def fully_committed(s: Settings, topic: str) -> dict[str, dict[int, int]]:
    """The committed offsets of the group consuming `topic` and the broker's end offsets (a partition never written:
    0, 0). The input topics are read by the ingest group, the findings by the faust app's."""
    bootstrap = s.kafka_bootstrap or ""
    ends = await end_offsets(bootstrap, topic)
    group = ingest_group(s.app_id) if topic == s.topic_activity else s.app_id
    committed = await committed_offsets(bootstrap, group, topic)
    return {"committed": {p: committed.get(p, 0) for p in ends}, "end": ends}


async def test_a_restarted_worker_resumes_at_its_committed_position(kafka_bootstrap: str, tmp_path: Path) -> None:
    s = isolated_settings(kafka_bootstrap, tmp_path)
    run = uuid.uuid4().hex[:6]
    first, second = strays(run, 40), strays(run, 25, start=40)

    before = RecordingResponder()
    async with Runtime(s, responder=before):
        await produce_events(kafka_bootstrap, s.topic_activity, first)
        await wait_for(lambda: handled(before) >= ids(first), what="findings of the first events")
    assert handled(before) == ids(first)
    # A clean stop commits everything processed, on both topics the worker consumes.
    for topic in (s.topic_activity, s.topic_findings):
        offsets = await fully_committed(s, topic)
        assert offsets["committed"] == offsets["end"], topic
    assert sum(offsets["end"].values()) == len(first)  # the findings topic: one finding per event

    await produce_events(kafka_bootstrap, s.topic_activity, second)
    after = RecordingResponder()
    async with Runtime(s, responder=after):  # same app id: the same consumer group
        await wait_for(lambda: handled(after) >= ids(second), what="findings of the new events")
        await asyncio.sleep(1.0)  # a replay of the first events would arrive by now
    assert handled(after) == ids(second), "the restarted worker reprocessed events committed before the stop"
    on_topic = await findings_on_topic(s)
    assert on_topic == Counter(ids(first) | ids(second))  # every event judged exactly once
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # faust's leader-election topic is off: Warden relies on no broker auto-creation
        assert f"{s.app_id}-__assignor-__leader" not in await admin.list_topics()
    finally:
        await admin.close()


async def test_consumer_lag_from_the_brokers_high_watermark_drains_to_zero(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = isolated_settings(kafka_bootstrap, tmp_path)
    run = uuid.uuid4().hex[:6]
    warm_up, backlog = strays(run, 8), strays(run, 60, start=8)

    responder = RecordingResponder()
    async with Runtime(s, responder=responder):  # gives the group a committed position
        await produce_events(kafka_bootstrap, s.topic_activity, warm_up)
        await wait_for(lambda: handled(responder) >= ids(warm_up), what="findings of the warm-up events")
    assert sum((await lag(kafka_bootstrap, ingest_group(s.app_id), s.topic_activity)).values()) == 0

    # With the worker stopped, the backlog is the broker's high watermark minus the committed offset. One producer
    # sends them, so partitions get batches of several records, which Tansu's high watermark miscounts.
    await produce_events(kafka_bootstrap, s.topic_activity, backlog)
    behind = await lag(kafka_bootstrap, ingest_group(s.app_id), s.topic_activity)
    assert sum(behind.values()) == len(backlog), behind
    assert len([p for p, n in behind.items() if n > 0]) > 1, behind  # spread over partitions

    async with Runtime(s, responder=responder):
        deadline = time.monotonic() + 30
        while sum((now := await lag(kafka_bootstrap, ingest_group(s.app_id), s.topic_activity)).values()) > 0:
            assert time.monotonic() < deadline, f"lag stuck at {now}"
            await asyncio.sleep(0.2)
        await wait_for(lambda: handled(responder) >= ids(backlog), what="findings of the backlog")
    assert sum((await lag(kafka_bootstrap, s.app_id, s.topic_findings)).values()) == 0


async def test_a_second_worker_joining_mid_stream_takes_partitions_and_no_event_is_lost(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    a_settings = isolated_settings(kafka_bootstrap, tmp_path / "a")
    assert a_settings.topic_partitions == 4
    b_settings = a_settings.model_copy(update={"data_dir": tmp_path / "b"})  # same app id, topics and group
    run = uuid.uuid4().hex[:6]
    first_worker, second_worker = RecordingResponder(), RecordingResponder()
    sent: list[dict[str, Any]] = []
    deliveries: list[asyncio.Future[Any]] = []
    stop_sending = asyncio.Event()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()

    async def keep_sending() -> None:
        while not stop_sending.is_set():
            for ev in strays(run, 4, start=len(sent)):
                deliveries.append(await producer.send(a_settings.topic_activity, json.dumps(ev).encode(),
                                                      key=ev["agent"]["id"].encode()))
                sent.append(ev)
            await asyncio.sleep(0.02)

    try:
        async with Runtime(a_settings, responder=first_worker) as a:
            flowing = asyncio.create_task(keep_sending())
            try:
                await wait_for(lambda: len(first_worker.findings) >= 40, what="the first worker at work")
                async with Runtime(b_settings, responder=second_worker) as b:  # joins while events flow
                    await wait_for(lambda: second_worker.findings, what="findings handled by the second worker")
                    await asyncio.sleep(1.0)
                    stop_sending.set()
                    await flowing
                    await asyncio.gather(*deliveries)
                    await wait_for(lambda: handled(first_worker, second_worker) >= ids(sent), timeout=60,
                                   what="a finding for every event sent")
                    assert a.ingest is not None and b.ingest is not None
                    activity = a_settings.topic_activity
                    mine = {tp.partition for tp in a.ingest.assignment() if tp.topic == activity}
                    theirs = {tp.partition for tp in b.ingest.assignment() if tp.topic == activity}
                    assert mine and theirs and not mine & theirs, (mine, theirs)
                    assert mine | theirs == {0, 1, 2, 3}
            finally:
                stop_sending.set()
                await flowing
    finally:
        await producer.stop()
    assert len(sent) > 100
    on_topic = await findings_on_topic(a_settings)
    assert ids(sent) <= set(on_topic), f"{len(ids(sent) - set(on_topic))} events have no finding"
    assert set(on_topic) <= ids(sent)


def test_the_readme_demo_runs_on_apache_kafka_with_its_oversized_message_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The demo sends a message over WARDEN_MAX_MESSAGE_BYTES; Apache Kafka takes it only because Warden created
    the activity topic with room for it (topics.topic_configs)."""
    t = f"demo{uuid.uuid4().hex[:8]}"
    env = {
        "WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "WARDEN_DATA_DIR": str(tmp_path),
        "WARDEN_WEB_BIND": "127.0.0.1:0",
        "WARDEN_APP_ID": f"warden-{t}",
        "WARDEN_TOPIC_ACTIVITY": f"{t}.activity",
        "WARDEN_TOPIC_FINDINGS": f"{t}.findings",
        "WARDEN_TOPIC_DLQ": f"{t}.dlq",
        # Its own topics, all of them: a new app's groups read from the earliest offset, so on a Kafka that other
        # tests use, it would first work through their approval requests and OTLP spans (and count them).
        "WARDEN_TOPIC_OTLP": f"{t}.otlp",
        "WARDEN_TOPIC_APPROVAL_REQUESTS": f"{t}.approval.requests",
        "WARDEN_TOPIC_APPROVAL_DECISIONS": f"{t}.approval.decisions",
        "WARDEN_TOPIC_APPROVAL_DLQ": f"{t}.approval.dlq",
        "WARDEN_TOPIC_CONTROL": f"{t}.control",
        "WARDEN_TOPIC_REVOCATIONS": f"{t}.revocations",
    }
    out = _warden("demo", env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(summary[k] > 0 for k in ("events", "invalid", "findings", "alerts", "incidents")), summary
    assert "embedded" not in out.stderr
    assert f"created topics {t}.activity, {t}.findings, {t}.dlq" in out.stderr


async def members(bootstrap: str, groups: list[str]) -> dict[str, list[str]]:
    """The member ids of each group (a static member's starts with its group instance id)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = [r for group in groups for r in await admin.describe_consumer_groups([group])]
    finally:
        await admin.close()
    return {g[1]: [m[0] for m in g[5]] for response in described for g in response.groups}


async def test_a_worker_with_a_group_instance_id_is_a_static_member_of_every_group_and_restarts_into_them(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """WARDEN_KAFKA_GROUP_INSTANCE_ID reaches every group the worker joins, and the worker started again under the
    same name takes the partitions back at once: a dynamic member would wait out its predecessor's 60 s session
    (static members do not leave the group when they stop), so the new events would not be judged in 30 s."""
    s = isolated_settings(kafka_bootstrap, tmp_path, kafka_group_instance_id="warden-0", kafka_session_timeout_s=60,
                          kafka_rebalance_timeout_s=60, kafka_heartbeat_interval_s=3)
    groups = [s.app_id, ingest_group(s.app_id), f"{s.app_id}.approvals", f"{s.app_id}.approval-actions"]
    run = uuid.uuid4().hex[:6]
    first, second = strays(run, 10), strays(run, 10, start=10)
    async with Runtime(s):  # the incident responder: the approvals' two groups exist only with it
        await produce_events(kafka_bootstrap, s.topic_activity, first)

        async def judged() -> bool:
            return sum((await findings_on_topic(s)).values()) >= len(first)

        await eventually(judged, timeout=30, what="findings of the first events")
        joined = await members(kafka_bootstrap, groups)
    assert {g: [m.rsplit("-", 5)[0] for m in ms] for g, ms in joined.items()} == {g: ["warden-0"] for g in groups}

    await produce_events(kafka_bootstrap, s.topic_activity, second)
    after = RecordingResponder()
    async with Runtime(s, responder=after):
        await wait_for(lambda: handled(after) >= ids(second), timeout=30, what="findings of the new events")
