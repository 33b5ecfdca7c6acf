"""OTLP span ingest throughput, in events/s, as a ratio against raw aiokafka + protobuf decode of the same messages.

    .venv/bin/python bench/otlp_throughput.py [--messages 500] [--reps 3]

Each message is what the Collector's kafka exporter writes with `traces.encoding: otlp_proto` and
`partition_traces_by_id: true`: one serialized TracesData of 100 spans (one trace, keyed by its id), made with the
real OpenTelemetry SDK and the OTLP exporter's encoder: 99 `execute_tool` spans that name no agent, exported before
their `invoke_agent` parent that does (so every tool span waits in the agent resolver for its parent). 1% of the
tool calls are out of scope.

(a) the reference limit: raw aiokafka getmany + `TracesData.ParseFromString` and a walk over every span;
(b) Warden: a real worker (the batch ingest's span input: decode, agent resolution, mapping, every detector,
    findings produced and acknowledged, offsets committed), from the first message taken to the last finding
    delivered.
Both read the same pre-produced topic in the same run; each rep fills a new topic. Compare the ratio b/a.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from bench.throughput import CountingResponder
from service.runtime.broker import EmbeddedBroker
from service.runtime.ingest.checkpoint import Checkpoint
from service.runtime.ingest.deliveries import Deliveries
from service.runtime.ingest.judge import BatchJudge
from service.runtime.settings import Settings
from service.runtime.topics import ensure_topics
from service.runtime.worker import Runtime
from tests.support.otel_spans import Recorder, otlp_proto
from warden.telemetry import metrics

PARTITIONS = 4
SPANS_PER_MESSAGE = 100
OUT_OF_SCOPE_EVERY = 100
AGENTS = {"support-bot-1": "kb.search", "billing-agent-1": "billing.lookup_invoice",
          "research-rag-1": "retrieval.search", "compliance-agent-1": "evidence.collect"}


def make_messages(n: int) -> tuple[list[tuple[bytes, bytes]], int, int]:
    """n messages of one trace each. Returns (key, value) pairs, events due and findings due."""
    out, events, due, call = [], 0, 0, 0
    recorders = {agent: Recorder(**{"service.name": f"{agent}-svc"}) for agent in AGENTS}
    for i in range(n):
        agent = list(AGENTS)[i % len(AGENTS)]
        rec = recorders[agent]
        with rec.agent(agent, **{"gen_ai.conversation.id": f"conv-{i}"}):
            for _ in range(SPANS_PER_MESSAGE - 1):
                call += 1
                tool = "shell.exec" if call % OUT_OF_SCOPE_EVERY == 0 else AGENTS[agent]
                due += tool == "shell.exec"
                with rec.tool(tool, {"query": f"lookup {call}", "page": call % 7}):
                    pass
        spans = rec.finished()
        out.append((spans[0].context.trace_id.to_bytes(16, "big"), otlp_proto(spans)))
        events += len(spans)
    return out, events, due


async def fill_topic(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=8 << 20)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def reference(bootstrap: str, topic: str, n_spans: int) -> float:
    """(a) raw aiokafka getmany + protobuf decode of every message and a walk over its spans: spans/s."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"ref-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    seen, t0 = 0, None
    try:
        while seen < n_spans:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                if t0 is None:
                    t0 = time.perf_counter()
                for r in records:
                    data = TracesData.FromString(r.value)
                    for rs in data.resource_spans:
                        for ss in rs.scope_spans:
                            seen += sum(1 for s in ss.spans if s.span_id)
        return n_spans / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await consumer.stop()


@contextmanager
def timed_ingest(n_events: int, due: int) -> Iterator[tuple[dict[str, float], Checkpoint]]:
    """Times the ingest inside its host: `marks["first"]` when the first message is judged, `marks["end"]` at the
    first checkpoint after which all `n_events` events and `due` findings are out (a poll from another task of the
    same loop may wait behind a long run of batches). Yields the marks and the checkpoint to give the Runtime."""
    events0, findings0 = metrics.total(metrics.EVENTS), metrics.total(metrics.FINDINGS)
    marks: dict[str, float] = {}
    judge = BatchJudge.judge

    async def timed_judge(self: BatchJudge, record: object, out: list) -> int:  # type: ignore[type-arg]
        marks.setdefault("first", time.perf_counter())
        return await judge(self, record, out)  # type: ignore[arg-type]

    class Timed(Checkpoint):
        async def settle(self, deliveries: Deliveries, stopping: Callable[[], bool]) -> None:
            await super().settle(deliveries, stopping)
            if "end" not in marks and metrics.total(metrics.EVENTS) - events0 >= n_events \
                    and metrics.total(metrics.FINDINGS) - findings0 >= due:
                marks["end"] = time.perf_counter()

    BatchJudge.judge = timed_judge  # type: ignore[method-assign]
    try:
        yield marks, Timed()
    finally:
        BatchJudge.judge = judge  # type: ignore[method-assign]


async def warden(bootstrap: str, topic: str, n_events: int, due: int, data_dir: Path) -> float:
    """(b) a real Warden worker reading the span topic, first event ingested to last finding produced: events/s."""
    suffix = uuid.uuid4().hex[:6]
    settings = Settings(kafka_bootstrap=bootstrap, topic_otlp=topic, topic_activity=f"bench-{suffix}.activity",
                        topic_findings=f"bench-{suffix}.findings", topic_dlq=f"bench-{suffix}.dlq",
                        topic_control=f"bench-{suffix}.control", topic_revocations=f"bench-{suffix}.revocations",
                        app_id=f"bench-{suffix}", data_dir=data_dir, web_bind="127.0.0.1:0",
                        otlp_encoding="otlp_proto", kafka_session_timeout_s=6, kafka_heartbeat_interval_s=1,
                        kafka_rebalance_timeout_s=3, topic_partitions=PARTITIONS)
    with timed_ingest(n_events, due) as (marks, checkpoint):
        async with Runtime(settings, responder=CountingResponder(), checkpoint=checkpoint):
            while "end" not in marks:
                await asyncio.sleep(0.05)
    elapsed = marks["end"] - marks["first"]
    return n_events / elapsed


async def rep(bootstrap: str, messages: list[tuple[bytes, bytes]], events: int, due: int, data_dir: Path
              ) -> tuple[float, float]:
    topic = f"bench-{uuid.uuid4().hex[:6]}.otlp"
    await ensure_topics(bootstrap, [topic], PARTITIONS)
    await fill_topic(bootstrap, topic, messages)
    a = await reference(bootstrap, topic, events)
    b = await warden(bootstrap, topic, events, due, data_dir)
    return a, b


def _mmm(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500, help="messages of 100 spans per rep")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    messages, events, due = make_messages(args.messages)
    bootstrap = os.environ.get("WARDEN_BENCH_KAFKA_BOOTSTRAP")
    broker = None if bootstrap else EmbeddedBroker().start()
    bootstrap = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.reps):
                results.append(await rep(bootstrap, messages, events, due, Path(tmp) / str(i)))
    finally:
        if broker:
            broker.stop()
    a, b = [r[0] for r in results], [r[1] for r in results]
    ratio = [y / x for x, y in results]
    print(f"{len(messages)} messages x {SPANS_PER_MESSAGE} spans = {events} events, {due} findings due, "
          f"{args.reps} reps (min / median / max)")
    print(f"a: aiokafka + protobuf decode  spans/s  {_mmm(a, ',.0f')}")
    print(f"b: warden OTLP ingest+detect   events/s {_mmm(b, ',.0f')}")
    print(f"b/a                                     {_mmm(ratio, '.3f')}")


if __name__ == "__main__":
    asyncio.run(main())
