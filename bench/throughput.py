"""Ingest+detect throughput as a ratio against raw aiokafka + pydantic on the same broker, in the same run, with the
event → finding latency at half the worker's maximum rate and the process's peak RSS.

    .venv/bin/python bench/throughput.py [--reps 3] [--events 20000] [--batch-events 200000] [--profile]

Per rep and case (single-event messages; batch-100 messages):
(a) the reference limit: raw aiokafka getmany + pydantic parse of every event;
(b) Warden: a real worker (batch ingest, decode, every detector, findings produced and acknowledged), timed from
    the first event ingested to the last finding produced, reading the same pre-produced topic;
then, with the same worker, events produced by another process at half of (b)'s rate for a few seconds: p50/p99 of
finding record time (set when the worker produces it) minus event time (set when the event is produced);
the worker's longest garbage-collector pause during that paced load (and how many passed 10 ms); and the peak RSS
of the worker's process (its own process, ru_maxrss). `--default-gc` runs the worker without
its GC tuning (service.runtime.worker.tune_gc: freeze, threshold), to measure what the tuning costs in RSS and gives in
events/s; the ingest's own young collection at each checkpoint stays.
Printed: min/median/max over the reps. Compare ratios, not absolute numbers (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import logging
import multiprocessing
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from pydantic import TypeAdapter

import service.runtime.worker as worker_module
from service.runtime.broker import EmbeddedBroker
from service.runtime.settings import Settings
from service.runtime.topics import ensure_topics
from service.runtime.worker import Runtime
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.telemetry import metrics

PARTITIONS = 4
OUT_OF_SCOPE_EVERY = 100  # 1% of tool calls use an unapproved tool
STALLED_S = 60.0  # no event judged for this long: the run fails instead of waiting forever
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


def make_event(i: int, ts: str = "2026-11-21T10:00:00Z", run: str = "bench", *, distinct: bool = False) -> dict:
    """Event `i` of `run`; every OUT_OF_SCOPE_EVERY-th uses an unapproved tool, a tool of its own when `distinct`
    (so that each violation opens an incident of its own: bench/latency.py), else the same one (they group)."""
    agent = AGENTS[i % len(AGENTS)]
    unapproved = f"shell.exec{run}x{i}" if distinct else "shell.exec"
    tool = unapproved if i % OUT_OF_SCOPE_EVERY == 0 else ALLOWED[agent]
    return {
        "event_id": f"{run}-{i}",
        "ts": ts,
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


_TS_SLOT = "0000-00-00T00:00:00.000000+00:00"  # as long as the send time in `isoformat(timespec="microseconds")`


def paced_produce(bootstrap: str, topic: str, rate: float, seconds: float, *, batch: int, run: str,
                  distinct: bool = False) -> None:
    """In another process (so that producing does not take the worker's CPU time in this one): events at `rate`
    per second for `seconds`, each stamped with the time it is sent. The messages are serialised before the clock
    starts, with a slot for the time that each send fills in, and each tick's messages go to the broker as one
    record batch per partition (`send_batch`: about half the CPU of one `send` per message, measured), so that the
    load generator takes as little of the machine's CPU as it can (on 2 vCPUs it shares them with the worker and
    the broker)."""

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_batch_size=1 << 20,
                                    max_request_size=8 << 20)
        total = int(rate * seconds) + batch
        messages = []
        for start in range(0, total, batch):
            evs = [make_event(j, _TS_SLOT, run, distinct=distinct) for j in range(start, start + batch)]
            messages.append((json.dumps(evs[0] if batch == 1 else evs).encode(), evs[0]["agent"]["id"].encode()))
        slot = _TS_SLOT.encode()
        await producer.start()
        try:
            partitions = sorted(await producer.partitions_for(topic))
            partition_of = {key: DefaultPartitioner()(key, partitions, partitions) for _, key in messages}
            t0, i, tick = time.perf_counter(), 0, 0.005
            while (elapsed := time.perf_counter() - t0) < seconds:
                due = int(elapsed * rate)
                batches: dict[int, Any] = {}
                while i + batch <= due or (i < due and batch == 1):
                    value, key = messages[i // batch]
                    p = partition_of[key]
                    builder = batches.get(p) or batches.setdefault(p, producer.create_batch())
                    ts = datetime.now(UTC).isoformat(timespec="microseconds").encode()
                    if builder.append(key=key, value=value.replace(slot, ts), timestamp=None) is None:
                        break  # this partition's batch is full: the rest are due at the next tick
                    i += batch
                for p, builder in batches.items():
                    builder.close()
                    await producer.send_batch(builder, topic, partition=p)
                await asyncio.sleep(tick)
            await producer.flush()
        finally:
            await producer.stop()
        print(i, flush=True)

    asyncio.run(go())


async def findings_latency(bootstrap: str, topic: str, run: str, expected: int,
                           times: dict[str, float] | None = None) -> list[float]:
    """Seconds from each `run` event's own time to its unapproved_tool finding's record time, read to the end;
    each finding's target -> its event's time (epoch seconds) into `times` when given."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    out: list[float] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    f = Finding.model_validate_json(r.value)
                    if f.rule == "unapproved_tool" and f.event_id.startswith(f"{run}-"):
                        out.append(max(0.0, r.timestamp / 1000 - f.ts.timestamp()))
                        if times is not None:
                            times[f.target] = f.ts.timestamp()
    finally:
        await consumer.stop()
    return out


class GcPauses:
    """The collector's pauses while it is installed (gc.callbacks): the longest, and how many took over 10 ms."""

    def __init__(self) -> None:
        self.longest_ms = 0.0
        self.over_10ms = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = (time.perf_counter() - self._started) * 1000
        self.longest_ms = max(self.longest_ms, took)
        self.over_10ms += took > 10

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def warden(bootstrap: str, topic: str, n_events: int, due: int, data_dir: Path, *, batch: int,
                 latency_s: float, default_gc: bool, profile: bool) -> dict[str, float | str]:
    """(b), in a process of its own (`--child`): a real Warden worker from first event ingested to last finding
    produced; then the latency at half that rate; the process's peak RSS."""
    if default_gc:
        worker_module.tune_gc = lambda: None
    suffix = uuid.uuid4().hex[:6]
    settings = Settings(kafka_bootstrap=bootstrap, topic_activity=topic, topic_findings=f"bench-{suffix}.findings",
                        topic_dlq=f"bench-{suffix}.dlq", topic_control=f"bench-{suffix}.control",
                        topic_revocations=f"bench-{suffix}.revocations", app_id=f"bench-{suffix}",
                        data_dir=data_dir, web_bind="127.0.0.1:0", kafka_session_timeout_s=6,
                        kafka_heartbeat_interval_s=1, kafka_rebalance_timeout_s=3, topic_partitions=PARTITIONS)
    await ensure_topics(bootstrap, [settings.topic_findings, settings.topic_dlq], PARTITIONS)
    prof = cProfile.Profile() if profile else None
    events0, findings0 = metrics.total(metrics.EVENTS), metrics.total(metrics.FINDINGS)
    async with Runtime(settings, responder=CountingResponder()):
        t0 = None
        seen, progressed = (0.0, 0.0), time.monotonic()
        while True:
            judged, found = metrics.total(metrics.EVENTS) - events0, metrics.total(metrics.FINDINGS) - findings0
            if t0 is None and judged > 0:
                t0 = time.perf_counter()
                if prof is not None:
                    prof.enable()
            if found >= due and judged >= n_events:
                elapsed = time.perf_counter() - (t0 or time.perf_counter())
                break
            if (judged, found) != seen:
                seen, progressed = (judged, found), time.monotonic()
            elif time.monotonic() - progressed > STALLED_S:  # e.g. a broker's retention deleted what was produced
                raise RuntimeError(f"the worker has judged {judged:,.0f} of {n_events:,} events and produced "
                                   f"{found:,.0f} of {due:,} findings, nothing more in {STALLED_S:g} s")
            await asyncio.sleep(0.002)
        if prof is not None:
            prof.disable()
        eps = n_events / elapsed
        run = f"lat{uuid.uuid4().hex[:6]}"
        proc = multiprocessing.get_context("spawn").Process(
            target=paced_produce, args=(bootstrap, topic, eps / 2, latency_s), kwargs={"batch": batch, "run": run})
        with GcPauses() as pauses:  # the worker's collector pauses while the paced load runs
            proc.start()
            await asyncio.get_running_loop().run_in_executor(None, proc.join)
            produced = int(latency_s * eps / 2)
            expected = len(range(0, produced, OUT_OF_SCOPE_EVERY)) - 1  # the tail may be cut by the last tick
            lat = await findings_latency(bootstrap, settings.topic_findings, run, max(1, expected))
    top = ""
    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        top = out.getvalue()
    return {"b_warden_eps": eps, "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
            "latency_samples": len(lat), "gc_longest_ms": pauses.longest_ms, "gc_over_10ms": pauses.over_10ms,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "profile": top}


def child(spec: str) -> None:
    """`--child JSON`: run (b) for one case in this fresh process and print its figures as one JSON line."""
    kw = json.loads(spec)
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(warden(kw.pop("bootstrap"), kw.pop("topic"), kw.pop("n_events"), kw.pop("due"),
                                Path(kw.pop("data_dir")), **kw))
    print("RESULT " + json.dumps(result), flush=True)


async def worker_in_child(**spec: object) -> dict[str, float | str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--child", json.dumps(spec),
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the worker process failed ({proc.returncode})")
    [line] = [x for x in out.decode().splitlines() if x.startswith("RESULT ")]
    result: dict[str, float | str] = json.loads(line.removeprefix("RESULT "))
    return result


async def run_case(bootstrap: str, n_events: int, batch: int, data_dir: Path, *, latency_s: float,
                   default_gc: bool = False, profile: bool = False) -> dict[str, Any]:
    topic = f"bench-{uuid.uuid4().hex[:6]}.activity"
    # Kept whole: a broker's size retention (the test Kafka keeps 64 MiB a partition) would delete the start of the
    # 200,000-event topic before the worker reads it, and the worker would wait for events that are gone.
    await ensure_topics(bootstrap, [topic], PARTITIONS, configs={topic: {"retention.bytes": "-1"}})
    messages, due = await fill_topic(bootstrap, topic, n_events, batch)
    a = await reference(bootstrap, topic, n_events)
    b = await worker_in_child(bootstrap=bootstrap, topic=topic, n_events=n_events, due=due, data_dir=str(data_dir),
                              batch=batch, latency_s=latency_s, default_gc=default_gc, profile=profile)
    return {"events": n_events, "messages": messages, "a_ref_eps": a, **b, "ratio_b_a": float(b["b_warden_eps"]) / a}


def spread(values: list[Any], fmt: str) -> str:
    """min/median/max."""
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000, help="events for the single-event case")
    parser.add_argument("--batch-events", type=int, default=200_000, help="events for the batch-of-100 case")
    parser.add_argument("--latency-s", type=float, default=5.0, help="seconds of paced load for the latency")
    parser.add_argument("--default-gc", action="store_true", help="also run batch-100 without the GC tuning")
    parser.add_argument("--profile", action="store_true",
                        help="profile the worker during (b) of each case's last rep, print the top functions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bootstrap = os.environ.get("WARDEN_BENCH_KAFKA_BOOTSTRAP")
    broker = None if bootstrap else EmbeddedBroker().start()
    bootstrap = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    cases = [("single", args.events, 1, False), ("batch100", args.batch_events, 100, False)]
    if args.default_gc:
        cases.append(("batch100-defaultgc", args.batch_events, 100, True))
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in cases}
    profiles: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.reps):
                for name, n, batch, default_gc in cases:
                    r = await run_case(bootstrap, n, batch, Path(tmp) / f"{name}-{rep}", latency_s=args.latency_s,
                                       default_gc=default_gc, profile=args.profile and rep == args.reps - 1)
                    profiles[name] = r.pop("profile") or profiles.get(name, "")
                    rows[name].append(r)
                    print(f"rep {rep} {name}: " + ", ".join(f"{k}={v:,.3f}" for k, v in r.items()), flush=True)
    finally:
        if broker:
            broker.stop()
    print(f"\nmin/median/max over {args.reps} reps")
    print(f"{'case':<19} {'a: aiokafka+pydantic ev/s':>27} {'b: warden ev/s':>22} {'b/a':>17} "
          f"{'p50 ms @ b/2':>16} {'p99 ms @ b/2':>16} {'longest GC ms':>16} {'peak RSS MB':>18}")
    for name, rs in rows.items():
        def col(key: str, fmt: str, rs: list[dict[str, Any]] = rs) -> str:
            return spread([r[key] for r in rs], fmt)
        print(f"{name:<19} {col('a_ref_eps', ',.0f'):>27} {col('b_warden_eps', ',.0f'):>22} "
              f"{col('ratio_b_a', '.3f'):>17} {col('p50_ms', '.1f'):>16} {col('p99_ms', '.1f'):>16} "
              f"{col('gc_longest_ms', '.0f'):>16} {col('peak_rss_mb', '.0f'):>18}")
    for name, top in profiles.items():
        if top:
            print(f"\nprofile of the worker during (b), {name}, last rep (by own time):\n{top}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        asyncio.run(main())
