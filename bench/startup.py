"""Start → healthy and restart after kill -9 → healthy of a real worker (`python -m service run`, its own process).

    .venv/bin/python bench/startup.py [--reps 5] [--events 20000] [--timings fast|default]

Per rep, on a fresh broker (Tansu, or WARDEN_BENCH_KAFKA_BOOTSTRAP): start a worker and measure, from the process's
launch, (1) /healthz answering and (2) ready end to end: a probe event sent at launch has its finding on the findings
topic (both consumer groups joined, the partitions' detector state rebuilt, the event judged). Then `--events` more
events are judged, the worker is killed with SIGKILL, a new one is launched with the same settings and both times are
measured again: the restart also rebuilds detector state from the input log and waits for the dead member's session.
The worker's own log gives where the time went (its "...up" lines, with their times relative to launch).
`--timings fast` is the group timing the embedded broker gets (session 6 s, heartbeat 1 s, rebalance 3 s); `default`
is an operator's unset settings (30 s, 3 s, 30 s). `--static` gives the worker WARDEN_KAFKA_GROUP_INSTANCE_ID (static
membership: the restarted worker takes its partitions back without waiting for the dead one's session to end).
Printed: min/median/max over the reps, seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from latency import FAST_GROUP_TIMINGS, PARTITIONS, free_port, worker_env
from throughput import make_event

from service.runtime.broker import EmbeddedBroker
from service.runtime.topics import ensure_topics

MARKS = ("created topics", "incident responder up", "Warden worker up")


def env_for(bootstrap: str, app: str, data_dir: Path, *, port: int, timings: str, static: bool) -> dict[str, str]:
    env = worker_env(bootstrap, app, data_dir, port=port)
    if timings == "fast":
        env.update(FAST_GROUP_TIMINGS)
    if static:
        env["WARDEN_KAFKA_GROUP_INSTANCE_ID"] = f"{app}-worker-0"
    return env


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


async def send(bootstrap: str, topic: str, events: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        for e in events:
            await producer.send(topic, json.dumps(e).encode(), key=e["agent"]["id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def finding_for(consumer: AIOKafkaConsumer, event_id: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=20)).values():
            if any(json.loads(r.value).get("event_id") == event_id for r in records):
                return True
    return False


async def launch(bootstrap: str, env: dict[str, str], log: Path, *, port: int, findings: AIOKafkaConsumer,
                 activity: str) -> tuple[subprocess.Popen[bytes], dict[str, float]]:
    """Launch a worker and send a probe event at once; seconds from launch to healthy and to the probe's finding,
    and to each of the worker's start-up log lines."""
    run = f"p{uuid.uuid4().hex[:6]}"
    probe = make_event(0, datetime.now(UTC).isoformat(), run, distinct=True)
    out = log.open("ab")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "service", "run"], env=env, stdout=out, stderr=out)
    out.close()
    await send(bootstrap, activity, [probe])
    times: dict[str, float] = {}
    deadline = t0 + 120
    while not healthy(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker never became healthy; see {log}")
        await asyncio.sleep(0.02)
    times["healthy"] = time.monotonic() - t0
    if not await finding_for(findings, probe["event_id"], deadline):
        raise RuntimeError(f"the probe's finding never came; see {log}")
    times["ready"] = time.monotonic() - t0
    launched = datetime.now(UTC).timestamp() - (time.monotonic() - t0)
    for line in log.read_text(errors="replace").splitlines()[-400:]:
        for mark in MARKS:
            if mark in line:  # "2026-12-07 15:25:38,148 WARNING ..." (local time, the text log format)
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC).timestamp()
                if at >= launched - 1:
                    times[mark] = at - launched
    return proc, times


async def rep(timings: str, n_events: int, tmp: Path, *, static: bool) -> dict[str, dict[str, float]]:
    bootstrap = os.environ.get("WARDEN_BENCH_KAFKA_BOOTSTRAP")
    broker = None if bootstrap else EmbeddedBroker().start()
    bootstrap = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    app = f"st-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = env_for(bootstrap, app, tmp / app, port=port, timings=timings, static=static)
    await ensure_topics(bootstrap, [f"{app}.activity", f"{app}.findings"], PARTITIONS)
    findings = AIOKafkaConsumer(f"{app}.findings", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await findings.start()
    log = tmp / f"{app}.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, cold = await launch(bootstrap, env, log, port=port, findings=findings, activity=f"{app}.activity")
        await send(bootstrap, f"{app}.activity", [make_event(i, datetime.now(UTC).isoformat(), "fill")
                                                  for i in range(1, n_events + 1)])
        await asyncio.sleep(3)  # judged and committed (the ingest commits at least every 0.2 s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc, restart = await launch(bootstrap, env, log, port=port, findings=findings, activity=f"{app}.activity")
        return {"start": cold, "restart after kill -9": restart}
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        await findings.stop()
        if broker:
            broker.stop()


def spread(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in (min(values), statistics.median(values), max(values))) if values else "-"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000, help="events judged before the kill (state rebuilt)")
    parser.add_argument("--timings", choices=["fast", "default"], default="fast")
    parser.add_argument("--static", action="store_true", help="static group membership (a group instance id)")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.reps):
            for case, times in (await rep(args.timings, args.events, Path(tmp), static=args.static)).items():
                print(f"rep {n} {case}: " + ", ".join(f"{k}={v:.2f}s" for k, v in times.items()), flush=True)
                rows.setdefault(case, []).append(times)
    print(f"\nmin/median/max over {args.reps} reps, seconds from launch; group timings {args.timings}, "
          f"{args.events:,} events judged before the kill; static membership {'on' if args.static else 'off'}")
    columns = [*MARKS, "healthy", "ready"]
    print(f"{'case':<24}" + "".join(f"{c:>26}" for c in columns))
    for case, ts in rows.items():
        print(f"{case:<24}" + "".join(f"{spread([t[c] for t in ts if c in t]):>26}" for c in columns))


if __name__ == "__main__":
    asyncio.run(main())
