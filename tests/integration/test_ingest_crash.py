"""At-least-once across a crash: a worker killed (SIGKILL) after its batch's findings were produced and before the
batch was committed. The next worker reads the batch again and produces the same findings (same `finding_id`), and
the responder records each once: no second incident, no second Slack root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import select

from responders.db import make_engine, session_factory
from responders.db.models import FindingRecord, Incident
from service.demo.slack_api_server import SlackApiServer
from service.runtime.ingest.clients import ingest_group
from service.runtime.settings import BUNDLED_POLICY, Settings
from service.runtime.topics import ensure_topics, topic_configs, topic_names
from tests.conftest import SLACK_TOKEN
from tests.integration.test_many_workers import REPO, Worker
from tests.support.incident_helpers import UNLIMITED_BUDGET, eventually, per_incident_policy
from tests.support.kafka_helpers import committed_offsets, event, produce_each, read_topic
from warden.contract.findings import Finding

pytestmark = pytest.mark.integration


class UncommittingWorker(Worker):
    """A worker whose ingest never commits (tests/support/uncommitting_worker.py)."""

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.uncommitting_worker"], env=self.env,
                                         cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)


async def findings(s: Settings, n: int) -> list[ConsumerRecord]:
    return await read_topic(s.kafka_bootstrap or "", s.topic_findings, expect=n, timeout=60)


async def handled(s: Settings, records: list[ConsumerRecord]) -> bool:
    """The faust group has committed the findings topic past every one of `records`: each was handled."""
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    done = await committed_offsets(s.kafka_bootstrap or "", s.app_id, s.topic_findings)
    return all(done.get(p, 0) >= end for p, end in ends.items())


async def test_a_worker_killed_between_produce_and_commit_duplicates_no_incident_nor_slack_root(
    kafka_bootstrap: str, slack_api: SlackApiServer, tmp_path: Path
) -> None:
    suffix, n = uuid.uuid4().hex[:8], 12
    s = Settings(kafka_bootstrap=kafka_bootstrap, app_id=f"warden-crash-{suffix}", data_dir=tmp_path / "data",
                 topic_activity=f"k{suffix}.activity", topic_findings=f"k{suffix}.findings",
                 topic_dlq=f"k{suffix}.dlq", topic_control=f"k{suffix}.control",
                 topic_revocations=f"k{suffix}.revocations", topic_otlp=f"k{suffix}.otlp",
                 topic_otlp_logs=f"k{suffix}.otlp_logs",
                 topic_approval_requests=f"k{suffix}.approval.requests",
                 topic_approval_decisions=f"k{suffix}.approval.decisions",
                 topic_approval_dlq=f"k{suffix}.approval.dlq")
    await ensure_topics(kafka_bootstrap, topic_names(s), s.topic_partitions, configs=topic_configs(s))
    # One root per incident is the point (issue 32's grouping would carry eleven of the twelve in one digest).
    policy = per_incident_policy(BUNDLED_POLICY, tmp_path / "policy")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")} | UNLIMITED_BUDGET | {
        "WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, "WARDEN_POLICY": str(policy),
        "WARDEN_DATA_DIR": str(s.data_dir), "WARDEN_APP_ID": s.app_id,
        "WARDEN_TOPIC_ACTIVITY": s.topic_activity, "WARDEN_TOPIC_FINDINGS": s.topic_findings,
        "WARDEN_TOPIC_DLQ": s.topic_dlq, "WARDEN_TOPIC_CONTROL": s.topic_control,
        "WARDEN_TOPIC_REVOCATIONS": s.topic_revocations, "WARDEN_WEB_BIND": "127.0.0.1:0",
        "WARDEN_TOPIC_OTLP": s.topic_otlp, "WARDEN_TOPIC_OTLP_LOGS": s.topic_otlp_logs,
        "WARDEN_TOPIC_APPROVAL_REQUESTS": s.topic_approval_requests,
        "WARDEN_TOPIC_APPROVAL_DECISIONS": s.topic_approval_decisions,
        "WARDEN_TOPIC_APPROVAL_DLQ": s.topic_approval_dlq,
        "WARDEN_KAFKA_SESSION_TIMEOUT_S": "6", "WARDEN_KAFKA_HEARTBEAT_INTERVAL_S": "1",
        "WARDEN_KAFKA_REBALANCE_TIMEOUT_S": "3", "WARDEN_SLACK_TOKEN": SLACK_TOKEN,
        "WARDEN_SLACK_API_URL": slack_api.base_url, "WARDEN_OUTBOX_POLL_S": "0.2", "PYTHONUNBUFFERED": "1",
    }
    first = UncommittingWorker("first", env, tmp_path / "first.log")
    second = Worker("second", env, tmp_path / "second.log")
    strays = [event(f"stray-{suffix}-{i}", kind="prompt", content={"prompt": f"p{i}"}) for i in range(n)]
    engine = make_engine(s.effective_database_url)

    async def rows(model: type) -> list[Any]:
        async with session_factory(engine)() as session:
            return list((await session.execute(select(model))).scalars())

    try:
        first.start()
        await first.up()
        ends = await produce_each(kafka_bootstrap, s.topic_activity, strays)
        # Produced and acknowledged, handled by the responder (incidents, Slack roots), and never committed.
        produced = await findings(s, n)
        await eventually(lambda: handled(s, produced), timeout=60, what="the first findings handled")
        await eventually(lambda: len(slack_api.roots()) == n, timeout=30, what="a Slack root per incident")
        assert await committed_offsets(kafka_bootstrap, ingest_group(s.app_id), s.topic_activity) == {}
        first.signal(signal.SIGKILL)
        assert first.proc is not None and first.proc.wait(10) == -signal.SIGKILL

        second.start()
        await second.up()

        again = await findings(s, 2 * n)
        ids = Counter(Finding.model_validate_json(r.value).finding_id for r in again)
        assert len(ids) == n and set(ids.values()) == {2}, "each finding produced again, under the same id"
        await eventually(lambda: handled(s, again), timeout=60, what="the repeated findings handled")
        committed = await committed_offsets(kafka_bootstrap, ingest_group(s.app_id), s.topic_activity)
        assert committed == ends, "the second worker committed the batch"
        incidents = await rows(Incident)
        assert len(incidents) == n and all(i.count == 1 for i in incidents), "a repeated finding is no new one"
        assert len(await rows(FindingRecord)) == n
        assert len(slack_api.roots()) == n, "no second Slack root"
    finally:
        first.stop()
        second.stop()
        await engine.dispose()
