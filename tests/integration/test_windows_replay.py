"""A rebalance must not make the windows count an event twice, nor lose the state of a partition that moves.

A second worker joins while the stream flows. The first worker keeps some partitions, which Kafka re-delivers from
their last committed offset (events it had already counted), and hands the others over (their windows must follow
them). These run on Tansu and on Apache Kafka (tests/support/kafka/pytest_on_apache_kafka.sh)."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import CommitFailedError
from aiokafka.partitioner import DefaultPartitioner

from service.runtime.settings import Settings
from service.runtime.worker import Runtime
from tests.support.isolated_worker import RecordingResponder, isolated_settings, wait_for
from tests.support.matrix_builder import BASE
from warden.contract.findings import Finding
from warden.telemetry import metrics

pytestmark = pytest.mark.integration

PARTITIONS = 4


def write_policy(tmp: Path, agents: list[str], calls: int, window: str = "1h") -> Path:
    """The test matrix plus a `fleet` workflow: `calls` tool calls per agent per `window`, secrets only under
    fleet/."""
    doc = copy.deepcopy(BASE) | {"version": 1}
    doc["workflows"]["fleet"] = {
        "agents": agents, "risk": "high", "mode": "chat",
        "approver": "marco", "detector": "secops", "responder": "data-gov",
        "scope": {"tools": ["fleet.*"], "secrets": ["vault://fleet/*"],
                  "limits": {"tool_calls": {"max": calls, "window": window}}},
    }
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def agents_on_every_partition(run: str, per_partition: int) -> list[str]:
    """Agent ids that the producers' partitioner spreads evenly: `per_partition` on each of the 4 partitions."""
    partitioner, partitions = DefaultPartitioner(), list(range(PARTITIONS))
    by_partition: dict[int, list[str]] = {p: [] for p in partitions}
    i = 0
    while any(len(v) < per_partition for v in by_partition.values()):
        agent = f"fleet-{run}-{i}"
        chosen = by_partition[partitioner(agent.encode(), partitions, partitions)]
        if len(chosen) < per_partition:
            chosen.append(agent)
        i += 1
    return [a for p in partitions for a in by_partition[p]]


def tool_call(agent: str, n: int, ts: datetime | None = None) -> dict[str, Any]:
    return {"event_id": f"{agent}-call-{n}", "ts": (ts or datetime.now(UTC)).isoformat(), "kind": "tool_call",
            "agent": {"id": agent}, "session_id": f"s-{agent}-{n}",
            "tool": {"name": "fleet.lookup", "arguments": {"n": n}}}


def marker(agent: str, tag: str) -> dict[str, Any]:
    """A secret read outside the grant: one `secret_access` finding, and no tool call. Once its finding is back,
    every earlier event of the agent (same partition) has been judged."""
    return {"event_id": f"{agent}-marker-{tag}", "ts": datetime.now(UTC).isoformat(), "kind": "secret_access",
            "agent": {"id": agent}, "resource": {"type": "secret", "id": f"vault://elsewhere/{tag}"}}


class Stream:
    """One producer sending native events keyed by agent id, optionally paced."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        self.deliveries: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> Stream:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*self.deliveries)
        await self.producer.stop()

    async def send(self, events: Iterable[dict[str, Any]], per_second: float | None = None) -> None:
        for ev in events:
            self.deliveries.append(await self.producer.send(self.topic, json.dumps(ev).encode(),
                                                            key=ev["agent"]["id"].encode()))
            if per_second:
                await asyncio.sleep(1 / per_second)
        await asyncio.gather(*self.deliveries)


def unique(*responders: RecordingResponder) -> dict[str, Finding]:
    """Every finding handled by any worker, by finding id: delivery is at-least-once, so a repeat is not a second
    finding."""
    return {f.finding_id: f for r in responders for f in r.findings}


def of_rule(findings: dict[str, Finding], rule: str) -> list[Finding]:
    return [f for f in findings.values() if f.rule == rule]


async def both_workers_hold_partitions(a: Runtime, b: Runtime, topic: str) -> None:
    def split() -> bool:
        assert a.ingest is not None and b.ingest is not None
        mine = {tp.partition for tp in a.ingest.assignment() if tp.topic == topic}
        theirs = {tp.partition for tp in b.ingest.assignment() if tp.topic == topic}
        return bool(mine and theirs and not mine & theirs and mine | theirs == set(range(PARTITIONS)))

    await wait_for(split, timeout=20, what="the partitions split between the two workers")


@contextmanager
def commits_lost(rt: Runtime) -> Iterator[None]:
    """While inside, the worker's offset commits never reach Kafka, as when its commit at a rebalance is refused
    ("already rebalanced"), which the ingest logs and passes over. Events judged meanwhile stay uncommitted, so the
    partitions the worker keeps are re-delivered from older offsets after the rebalance, and the ones it hands over
    start further back on their new owner: what the issue saw (1,293 events re-read)."""
    assert rt.ingest is not None
    consumer = rt.ingest.consumer

    async def refused(*args: object, **kwargs: object) -> None:
        raise CommitFailedError("already rebalanced")

    consumer.commit = refused
    try:
        yield
    finally:
        del consumer.commit  # aiokafka's own again


def settings_for(kafka_bootstrap: str, tmp: Path, agents: list[str], calls: int, window: str = "1h"
                 ) -> tuple[Settings, Settings]:
    a = isolated_settings(kafka_bootstrap, tmp / "a", policy=write_policy(tmp, agents, calls, window))
    assert a.topic_partitions == PARTITIONS
    return a, a.model_copy(update={"data_dir": tmp / "b"})  # same app id, topics and group


@pytest.mark.parametrize(
    ("limit", "window", "spacing_s"),
    [
        # The shape: every call within one window, each agent exactly at the limit.
        pytest.param(60, "1h", 0, id="all-calls-in-one-window"),
        # Exactly 5 calls in every minute for 12 minutes of event time. A window keeps only limit + 1 entries, so
        # the events re-read from further back are not among them: only the offset check keeps them out.
        pytest.param(5, "1m", 12, id="at-the-limit-in-every-window"),
    ],
)
async def test_a_second_worker_joining_under_a_limit_the_stream_exactly_meets_raises_no_finding(
    kafka_bootstrap: str, tmp_path: Path, limit: int, window: str, spacing_s: float
) -> None:
    calls = 60
    agents = agents_on_every_partition(uuid.uuid4().hex[:6], per_partition=2)
    a_settings, b_settings = settings_for(kafka_bootstrap, tmp_path, agents, limit, window)
    t0 = datetime.now(UTC) - timedelta(seconds=calls * spacing_s)
    stream = [tool_call(agent, n, t0 + timedelta(seconds=n * spacing_s) if spacing_s else None)
              for n in range(calls) for agent in agents]  # interleaved: all agents at once
    replayed0, rebuilt0 = metrics.total(metrics.REPLAYED), metrics.total(metrics.REBUILD_EVENTS)
    first, second = RecordingResponder(), RecordingResponder()
    async with Stream(kafka_bootstrap, a_settings.topic_activity) as out, Runtime(a_settings, responder=first) as a:
        flowing = asyncio.create_task(out.send(stream, per_second=45))  # ~11 s of allowed calls
        await asyncio.sleep(3)
        b = Runtime(b_settings, responder=second)
        try:
            with commits_lost(a):
                await b.start()  # joins mid-stream: a rebalance
                await both_workers_hold_partitions(a, b, a_settings.topic_activity)
            await flowing
            await out.send(marker(agent, "end") for agent in agents)
            await wait_for(lambda: len(of_rule(unique(first, second), "secret_access")) == len(agents),
                           what="every agent's end marker judged")
            await asyncio.sleep(1.0)  # a late false finding would arrive by now
        finally:
            await b.stop()
    bursts = of_rule(unique(first, second), "tool_burst")
    assert bursts == [], f"{len(bursts)} false tool_burst findings for agents that kept to {limit} calls per {window}"
    # The test exercised both halves: the kept partitions were re-delivered, the moved ones rebuilt from the log.
    replayed = metrics.total(metrics.REPLAYED) - replayed0
    assert replayed > 0, "no message was re-delivered: the rebalance did not replay anything"
    assert metrics.total(metrics.REBUILD_EVENTS) > rebuilt0, "no partition state was rebuilt from the log"


async def test_a_burst_that_spans_the_rebalance_is_found_exactly_once_on_its_first_call_over_the_limit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    calls = 40
    agents = agents_on_every_partition(uuid.uuid4().hex[:6], per_partition=2)
    a_settings, b_settings = settings_for(kafka_bootstrap, tmp_path, agents, calls)
    before = [tool_call(agent, n) for n in range(calls // 2) for agent in agents]
    after = [tool_call(agent, n) for n in range(calls // 2, calls + 1) for agent in agents]  # one call too many
    first, second = RecordingResponder(), RecordingResponder()
    async with Stream(kafka_bootstrap, a_settings.topic_activity) as out, Runtime(a_settings, responder=first) as a:
        await out.send([*before, *(marker(agent, "half") for agent in agents)])
        await wait_for(lambda: len(of_rule(unique(first), "secret_access")) == len(agents),
                       what="the first half judged by the first worker alone")
        await asyncio.sleep(1.5)  # the first half committed
        flowing = asyncio.create_task(out.send(after, per_second=40))  # the rest, ~4 s, while the second joins
        b = Runtime(b_settings, responder=second)
        try:
            with commits_lost(a):
                await b.start()
                await both_workers_hold_partitions(a, b, a_settings.topic_activity)
            await flowing
            await out.send(marker(agent, "end") for agent in agents)
            await wait_for(lambda: len(of_rule(unique(first, second), "secret_access")) == 2 * len(agents),
                           what="every agent's end marker judged")
            await asyncio.sleep(1.0)
        finally:
            await b.stop()
    bursts = of_rule(unique(first, second), "tool_burst")
    assert sorted(f.event_id for f in bursts) == sorted(f"{agent}-call-{calls}" for agent in agents), (
        "each agent's burst is found once, on its first call over the limit")
