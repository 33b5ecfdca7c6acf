"""Ingest+detect throughput as a ratio against raw aiokafka + pydantic on the same broker, in the same run.

    .venv/bin/python bench/throughput.py [--events 20000] [--batch-events 200000]

(a) the reference limit: raw aiokafka getmany + pydantic parse of every event;
(b) Warden: a real worker (faust agents, decode, every detector, findings produced), timed from the first
    event ingested to the last finding produced.
Both read the same pre-produced topic. Figures are events/s; compare the ratio b/a, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import TypeAdapter

from warden.contract import metrics
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.runtime.broker import EmbeddedBroker
from warden.runtime.settings import Settings
from warden.runtime.topics import ensure_topics
from warden.runtime.worker import Runtime

PARTITIONS = 4
OUT_OF_SCOPE_EVERY = 100  # 1% of tool calls use an unapproved tool
AGENTS = ["support-bot-1", "support-bot-2", "billing-agent-1", "research-rag-1", "compliance-agent-1"]
ALLOWED = {"support-bot-1": "kb.search", "support-bot-2": "kb.fetch_article",
           "billing-agent-1": "billing.lookup_invoice",
           "research-rag-1": "retrieval.search", "compliance-agent-1": "evidence.collect"}
_BATCH = TypeAdapter(list[ActivityEvent])


class CountingResponder:
    """Counts findings instead of printing them, so the bench measures the pipeline, not the terminal."""

    def __init__(self) -> None:
        self.handled = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def handle(self, finding: Finding) -> None:
        self.handled += 1


def make_event(i: int) -> dict:
    agent = AGENTS[i % len(AGENTS)]
    tool = "shell.exec" if i % OUT_OF_SCOPE_EVERY == 0 else ALLOWED[agent]
    return {
        "event_id": f"bench-{i}",
        "ts": "2026-11-21T10:00:00Z",
        "kind": "tool_call",
        "agent": {"id": agent},
        "session_id": f"s-{i % 997}",
        "tool": {"name": tool, "call_id": f"c{i}", "arguments": {"query": f"lookup {i}", "page": i % 7}},
        "content": {"prompt": "x" * 600},  # ~1 KB events, as in the measured notes
    }


async def fill_topic(bootstrap: str, topic: str, n_events: int, batch: int) -> tuple[int, int]:
    """Produce n_events as messages of `batch` events each, keyed by agent. Returns (messages, findings due)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=8 << 20)
    await producer.start()
    messages = 0
    try:
        for start in range(0, n_events, batch):
            evs = [make_event(i) for i in range(start, min(start + batch, n_events))]
            value = json.dumps(evs[0] if batch == 1 else evs).encode()
            await producer.send(topic, value, key=evs[0]["agent"]["id"].encode())
            messages += 1
        await producer.flush()
    finally:
        await producer.stop()
    due = sum(1 for i in range(n_events) if i % OUT_OF_SCOPE_EVERY == 0)
    return messages, due


async def reference(bootstrap: str, topic: str, n_events: int) -> float:
    """(a) raw aiokafka getmany + pydantic parse: events/s."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"ref-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    seen, t0 = 0, None
    try:
        while seen < n_events:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                if t0 is None:
                    t0 = time.perf_counter()
                for r in records:
                    if r.value[:1] == b"[":
                        seen += len(_BATCH.validate_json(r.value))
                    else:
                        ActivityEvent.model_validate_json(r.value)
                        seen += 1
        return n_events / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


async def warden(bootstrap: str, topic: str, n_events: int, due: int, data_dir: Path) -> float:
    """(b) a real Warden worker from first event ingested to last finding produced: events/s."""
    suffix = uuid.uuid4().hex[:6]
    settings = Settings(kafka_bootstrap=bootstrap, topic_activity=topic, topic_findings=f"bench-{suffix}.findings",
                        topic_dlq=f"bench-{suffix}.dlq", app_id=f"bench-{suffix}", data_dir=data_dir,
                        web_bind="127.0.0.1:0", kafka_session_timeout_s=6, kafka_heartbeat_interval_s=1,
                        kafka_rebalance_timeout_s=3, topic_partitions=PARTITIONS)
    await ensure_topics(bootstrap, [settings.topic_findings, settings.topic_dlq], PARTITIONS)
    events0, findings0 = metrics.total(metrics.EVENTS), metrics.total(metrics.FINDINGS)
    async with Runtime(settings, responder=CountingResponder()):
        t0 = None
        while True:
            if t0 is None and metrics.total(metrics.EVENTS) > events0:
                t0 = time.perf_counter()
            events_done = metrics.total(metrics.EVENTS) - events0 >= n_events
            if metrics.total(metrics.FINDINGS) - findings0 >= due and events_done:
                elapsed = time.perf_counter() - (t0 or time.perf_counter())
                break
            await asyncio.sleep(0.002)
    return n_events / elapsed


async def run_case(bootstrap: str, n_events: int, batch: int, data_dir: Path) -> dict[str, float]:
    topic = f"bench-{uuid.uuid4().hex[:6]}.activity"
    await ensure_topics(bootstrap, [topic], PARTITIONS)
    messages, due = await fill_topic(bootstrap, topic, n_events, batch)
    a = await reference(bootstrap, topic, n_events)
    b = await warden(bootstrap, topic, n_events, due, data_dir)
    return {"events": n_events, "messages": messages, "a_ref_eps": a, "b_warden_eps": b, "ratio_b_a": b / a}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events for the single-event case")
    parser.add_argument("--batch-events", type=int, default=200_000, help="events for the batch-of-100 case")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bootstrap = os.environ.get("WARDEN_BENCH_KAFKA_BOOTSTRAP")
    broker = None if bootstrap else EmbeddedBroker().start()
    bootstrap = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [("single", await run_case(bootstrap, args.events, 1, Path(tmp))),
                    ("batch100", await run_case(bootstrap, args.batch_events, 100, Path(tmp)))]
    finally:
        if broker:
            broker.stop()
    print(f"{'case':<9} {'events':>8} {'messages':>9} {'a: aiokafka+pydantic ev/s':>26} "
          f"{'b: warden ev/s':>15} {'b/a':>6}")
    for name, r in rows:
        print(f"{name:<9} {r['events']:>8} {r['messages']:>9} {r['a_ref_eps']:>26,.0f} "
              f"{r['b_warden_eps']:>15,.0f} {r['ratio_b_a']:>6.3f}")


if __name__ == "__main__":
    asyncio.run(main())
