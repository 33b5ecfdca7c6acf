"""What 1,000 hostile messages mixed into a normal stream cost, as ratios against the same stream without them.

    .venv/bin/python bench/hostile.py [--events 20000] [--hostile 1000] [--reps 3]

(a) the reference: a real worker (faust agents, decode, every detector, findings, DLQ) on N normal single-event
    messages, timed from the first message judged to the last event counted and the last finding produced;
(b) the same N messages with H hostile ones spread evenly among them (deep nesting, poisoned batches, duplicate
    keys, NaN, lone surrogates, UTF-16, cut JSON, random bytes, oversize), timed until every good event, finding
    and dead letter is through.
(c) the H hostile messages alone, timed the same way.
Their own share: b/(a+c) near 1 means mixing them in costs nothing beyond their own time (no stall, no retry
sleeps, no slow path for the good neighbours); `hostile/normal` is a hostile message's time over a normal one's.
Also: the pure decoder's time per hostile class against a normal message (decoding time is bounded: checked
here, not in a test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka import AIOKafkaProducer
from throughput import OUT_OF_SCOPE_EVERY, PARTITIONS, CountingResponder, make_event

from service.runtime.broker import EmbeddedBroker
from service.runtime.settings import Settings
from service.runtime.topics import ensure_topics
from service.runtime.worker import Runtime
from streams.ingest.native import decode
from warden.telemetry import metrics

LIMIT = 65_536  # WARDEN_MAX_MESSAGE_BYTES for the bench: oversize messages stay cheap to produce


def _good(i: int) -> str:
    return json.dumps(make_event(10_000_000 + i))


def _splice(i: int, extra: str) -> str:
    return "{" + extra + ", " + _good(i)[1:]


# Each builds one hostile message from a seed; classes are cycled through so every run has the same mix.
HOSTILE: dict[str, Callable[[int], bytes]] = {
    "deep_20kb": lambda i: ("[" * 10_000 + "]" * 10_000).encode(),
    "deep_mixed_40kb": lambda i: ("[" + _good(i) + "," + '[{"a":1},' * 4_000 + "]" * 4_000 + "]").encode(),
    "poisoned_batch": lambda i: ("[" + ",".join([_good(i), "[" * 5_000 + "]" * 5_000, _splice(i, '"x": "\\ud800"'),
                                                 _splice(i, '"kind": "bogus"'), _good(i + 1)]) + "]").encode(),
    "duplicate_key": lambda i: _splice(i, '"kind": "bogus"').encode(),
    "nan": lambda i: _splice(i, '"x": NaN').encode(),
    "lone_surrogate": lambda i: _splice(i, '"x": "\\udc00"').encode(),
    "utf16_batch": lambda i: ("[" + _good(i) + "]").encode("utf-16-le"),
    "cut_json": lambda i: _good(i)[: 300].encode(),
    "random_bytes": lambda i: random.Random(i).randbytes(1_000),
    "too_large": lambda i: b"[" + b" " * (LIMIT + 10) + b"]",
}


def hostile_message(i: int) -> bytes:
    names = sorted(HOSTILE)
    return HOSTILE[names[i % len(names)]](i)


async def fill(bootstrap: str, topic: str, n: int, hostile: int) -> dict[str, int]:
    """N normal single-event messages with `hostile` hostile ones spread evenly; what the worker must emit."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=4 << 20)
    await producer.start()
    every = max(1, n // hostile) if hostile else n + 1
    due = {"events": 0, "findings": 0, "dead": 0, "messages": 0}

    async def send_hostile(h: int) -> None:
        raw = hostile_message(h)
        out = decode(raw, LIMIT)
        due["events"] += len(out.events)
        due["findings"] += sum(1 for e in out.events if e.tool and e.tool.name == "shell.exec")
        due["dead"] += len(out.rejections)
        await producer.send(topic, raw, key=b"hostile-%d" % (h % 7))

    try:
        h = 0
        for i in range(n):
            ev = make_event(i)
            await producer.send(topic, json.dumps(ev).encode(), key=ev["agent"]["id"].encode())
            due["events"] += 1
            due["findings"] += i % OUT_OF_SCOPE_EVERY == 0
            if hostile and i % every == every - 1 and h < hostile:
                await send_hostile(h)
                h += 1
        for rest in range(h, hostile):  # no normal ones (case c): the hostile messages alone
            await send_hostile(rest)
        await producer.flush()
    finally:
        await producer.stop()
    due["messages"] = n + hostile
    return due


async def timed_worker(bootstrap: str, topic: str, due: dict[str, int], data_dir: Path) -> float:
    """A real worker from the first message judged until every due event, finding and dead letter: seconds."""
    suffix = uuid.uuid4().hex[:6]
    settings = Settings(kafka_bootstrap=bootstrap, topic_activity=topic, topic_findings=f"bench-{suffix}.findings",
                        topic_dlq=f"bench-{suffix}.dlq", app_id=f"bench-{suffix}", data_dir=data_dir,
                        web_bind="127.0.0.1:0", kafka_session_timeout_s=6, kafka_heartbeat_interval_s=1,
                        kafka_rebalance_timeout_s=3, topic_partitions=PARTITIONS, max_message_bytes=LIMIT)
    await ensure_topics(bootstrap, [settings.topic_findings, settings.topic_dlq], PARTITIONS)
    counters = (metrics.EVENTS, metrics.FINDINGS, metrics.INVALID)
    start = [metrics.total(c) for c in counters]
    async with Runtime(settings, responder=CountingResponder()):
        t0 = None
        while True:
            done = [metrics.total(c) - s for c, s in zip(counters, start, strict=True)]
            if t0 is None and (done[0] or done[2]):
                t0 = time.perf_counter()
            if done[0] >= due["events"] and done[1] >= due["findings"] and done[2] >= due["dead"]:
                return time.perf_counter() - (t0 or time.perf_counter())
            await asyncio.sleep(0.002)


async def one_rep(bootstrap: str, n: int, hostile: int, data_dir: Path) -> dict[str, float]:
    times = {}
    for name, normal, h in (("a", n, 0), ("b", n, hostile), ("c", 0, hostile)):
        topic = f"bench-{uuid.uuid4().hex[:6]}.activity"
        await ensure_topics(bootstrap, [topic], PARTITIONS, configs={topic: {"max.message.bytes": str(4 << 20)}})
        due = await fill(bootstrap, topic, normal, h)
        times[name] = await timed_worker(bootstrap, topic, due, data_dir)
    per_normal = times["a"] / n
    return {"a_s": times["a"], "b_s": times["b"], "c_s": times["c"], "b_over_a": times["b"] / times["a"],
            "fair_share": (n + hostile) / n, "b_over_a_plus_c": times["b"] / (times["a"] + times["c"]),
            "hostile_over_normal": (times["c"] / hostile) / per_normal}


def decode_costs(reps: int = 5) -> list[tuple[str, float, float]]:
    """The pure decoder: best-of-reps µs per message per class, and its ratio to a normal single event."""
    def best(raw: bytes) -> float:
        runs = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(20):
                decode(raw, LIMIT)
            runs.append((time.perf_counter() - t) / 20)
        return min(runs)

    normal = best(_good(0).encode())
    rows = [("normal_1kb", normal * 1e6, 1.0)]
    for name in sorted(HOSTILE):
        us = best(HOSTILE[name](0))
        rows.append((name, us * 1e6, us / normal))
    return rows


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="normal single-event messages")
    parser.add_argument("--hostile", type=int, default=1_000, help="hostile messages mixed in")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    print(f"{'decoder, per message':<22} {'µs':>10} {'× normal':>9}")
    for name, us, ratio in decode_costs():
        print(f"{name:<22} {us:>10.1f} {ratio:>9.1f}")
    bootstrap = os.environ.get("WARDEN_BENCH_KAFKA_BOOTSTRAP")
    broker = None if bootstrap else EmbeddedBroker().start()
    bootstrap = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    reps = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.reps):
                reps.append(await one_rep(bootstrap, args.events, args.hostile, Path(tmp)))
    finally:
        if broker:
            broker.stop()
    print(f"\nworker: (a) {args.events} normal messages, (b) the same + {args.hostile} hostile spread among them, "
          f"(c) the {args.hostile} hostile alone; {args.reps} reps")
    for r in reps:
        print(f"  a {r['a_s']:.2f}s  b {r['b_s']:.2f}s  c {r['c_s']:.2f}s  b/a {r['b_over_a']:.3f}"
              f"  b/(a+c) {r['b_over_a_plus_c']:.3f}  hostile/normal per message {r['hostile_over_normal']:.2f}")
    print(f"b/a                      min/median/max: {_spread([r['b_over_a'] for r in reps])}"
          f"  (fair share by count {reps[0]['fair_share']:.3f})")
    print(f"b/(a+c)                  min/median/max: {_spread([r['b_over_a_plus_c'] for r in reps])}"
          "  (1.0: mixing adds nothing to their own time)")
    print(f"hostile/normal per msg   min/median/max: {_spread([r['hostile_over_normal'] for r in reps])}")


if __name__ == "__main__":
    asyncio.run(main())
