"""Event → finding and event → Slack root message latency at offered rates, with the worker's CPU, on a real worker.

    .venv/bin/python bench/latency.py [--rates 200,1000,1500] [--seconds 20] [--reps 3] [--postgres]

Per rep: a fresh broker (Tansu, or WARDEN_BENCH_KAFKA_BOOTSTRAP), the local Slack API (service.demo.slack_api_server,
in this process) and a real worker (`python -m service run`, its own process) with the bundled policy, on SQLite in a
temporary folder, or with --postgres on a PostgreSQL this starts (tests/support/pg_server.py). For each offered rate,
another
process produces single-event messages at that rate for `--seconds`, each stamped with the time it is sent
(bench/throughput.py's paced producer); 1 in 100 uses an unapproved tool of its own, so each opens an incident of
its own and pages its responder's Slack channel.
Measured: the finding's record time on the findings topic minus the event's time (p50/p99), the time the Slack API
received the incident's root `chat.postMessage` minus the event's time (p50/p99), and the worker's CPU (user+system
time over the window, /proc). A warm-up incident is paged before the first rate, so group joins are not counted.
On SQLite, the stages of a root from the worker's database: event → incident opened, and opened → root delivered
(the outbox), p50 each, in the JSON line per rate. Printed: min/median/max over the reps per rate. Absolute figures;
the machine is shared, so run it quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import sqlite3
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

import asyncpg
from aiokafka import AIOKafkaProducer
from throughput import OUT_OF_SCOPE_EVERY, findings_latency, make_event, paced_produce, percentile

from service.demo.slack_api_server import SlackApiServer
from service.runtime.broker import EmbeddedBroker
from tests.support.pg_server import private_postgres, sqlalchemy_url

PARTITIONS = 4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


FAST_GROUP_TIMINGS = {"WARDEN_KAFKA_SESSION_TIMEOUT_S": "6", "WARDEN_KAFKA_HEARTBEAT_INTERVAL_S": "1",
                      "WARDEN_KAFKA_REBALANCE_TIMEOUT_S": "3"}  # what the embedded broker gets


def worker_env(bootstrap: str, app: str, data_dir: Path, *, port: int) -> dict[str, str]:
    """The environment of a bench worker (`python -m service run`): this one's minus any WARDEN_* setting, then the
    broker, an app id with topics of its own, a data dir, a web port and text logs (read by bench/startup.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    env.update({
        "WARDEN_KAFKA_BOOTSTRAP": bootstrap, "WARDEN_APP_ID": app, "WARDEN_DATA_DIR": str(data_dir),
        "WARDEN_WEB_BIND": f"127.0.0.1:{port}", "WARDEN_TOPIC_PARTITIONS": str(PARTITIONS), "WARDEN_LOG_FORMAT": "text",
        "WARDEN_TOPIC_ACTIVITY": f"{app}.activity", "WARDEN_TOPIC_FINDINGS": f"{app}.findings",
        "WARDEN_TOPIC_DLQ": f"{app}.dlq", "WARDEN_TOPIC_CONTROL": f"{app}.control",
        "WARDEN_TOPIC_REVOCATIONS": f"{app}.revocations",
    })
    return env


def roots_by_token(slack: SlackApiServer, run: str) -> dict[str, float]:
    """The arrival time of each root chat.postMessage, by the unapproved tool it names (`shell.exec<run>x<i>`)."""
    out: dict[str, float] = {}
    marker = f"shell.exec{run}x"
    for r in slack.calls("chat.postMessage"):
        if r.args.get("thread_ts"):
            continue
        body = r.body.decode("utf-8", "replace")
        at = body.find(marker)
        if at < 0:
            continue
        end = at + len(marker)
        while end < len(body) and body[end].isdigit():
            end += 1
        out.setdefault(body[at:end], r.at)
    return out


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the worker did not become healthy")


async def warm_up(bootstrap: str, topic: str, slack: SlackApiServer) -> None:
    """One incident paged end to end: both consumer groups have joined and every path has run once."""
    run = f"warm{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        event = make_event(0, datetime.now(UTC).isoformat(), run, distinct=True)
        await producer.send_and_wait(topic, json.dumps(event).encode(), key=event["agent"]["id"].encode())
    finally:
        await producer.stop()
    deadline = time.monotonic() + 90
    while not roots_by_token(slack, run):
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up incident was never paged")
        await asyncio.sleep(0.05)


def stages(db: Path, times: dict[str, float]) -> dict[str, float]:
    """Where a root's time goes, from the worker's SQLite database: event → incident opened (the finding produced,
    consumed by the findings agent and recorded) and incident opened → root delivered (the outbox), p50 ms each."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT i.target, i.opened_at, n.delivered_at FROM incidents i JOIN notifications n "
                            "ON n.incident_id = i.id AND n.kind = 'root' WHERE n.delivered_at IS NOT NULL").fetchall()

    def epoch(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    opened = [epoch(o) - times[t] for t, o, _ in rows if t in times]
    delivered = [epoch(d) - epoch(o) for t, o, d in rows if t in times]
    return {"opened_p50_ms": percentile(opened, 0.5) * 1000, "outbox_p50_ms": percentile(delivered, 0.5) * 1000}


async def one_rate(bootstrap: str, topic: str, findings_topic: str, slack: SlackApiServer, *, pid: int,
                   rate: float, seconds: float, db: Path) -> dict[str, float]:
    run = f"r{uuid.uuid4().hex[:6]}"
    proc = multiprocessing.get_context("spawn").Process(
        target=paced_produce, args=(bootstrap, topic, rate, seconds),
        kwargs={"batch": 1, "run": run, "distinct": True})
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    proc.start()
    await asyncio.get_running_loop().run_in_executor(None, proc.join)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    expected = len(range(0, int(rate * seconds), OUT_OF_SCOPE_EVERY)) - 1  # the tail may be cut by the last tick
    times: dict[str, float] = {}
    finding_lat = await findings_latency(bootstrap, findings_topic, run, max(1, expected), times)
    deadline = time.monotonic() + 60
    while len(roots := roots_by_token(slack, run)) < len(times) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    root_lat = [max(0.0, at - times[token]) for token, at in roots.items() if token in times]
    return {"rate": rate, "findings": len(finding_lat), "roots": len(root_lat), "cpu": cpu,
            "finding_p50_ms": percentile(finding_lat, 0.5) * 1000,
            "finding_p99_ms": percentile(finding_lat, 0.99) * 1000,
            "root_p50_ms": percentile(root_lat, 0.5) * 1000, "root_p99_ms": percentile(root_lat, 0.99) * 1000,
            **stages(db, times)}


async def rep(rates: list[float], seconds: float, database_url: str | None, tmp: Path) -> list[dict[str, float]]:
    bootstrap = os.environ.get("WARDEN_BENCH_KAFKA_BOOTSTRAP")
    broker = None if bootstrap else EmbeddedBroker().start()
    bootstrap = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    slack = await SlackApiServer(token="xoxb-bench").start()
    app = f"lat-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = worker_env(bootstrap, app, tmp / app, port=port) | FAST_GROUP_TIMINGS
    env.update({"WARDEN_SLACK_TOKEN": "xoxb-bench", "WARDEN_SLACK_API_URL": slack.base_url})
    if database_url:
        env["WARDEN_DATABASE_URL"] = database_url
    log = (tmp / f"{app}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "service", "run"], env=env, stdout=log, stderr=log)
    try:
        try:
            await wait_healthy(port, proc)
        except RuntimeError:
            log.flush()
            sys.stderr.write((tmp / f"{app}.log").read_text()[-3000:])
            raise
        await warm_up(bootstrap, f"{app}.activity", slack)
        rows = []
        for rate in rates:
            row = await one_rate(bootstrap, f"{app}.activity", f"{app}.findings", slack, pid=proc.pid, rate=rate,
                                 seconds=seconds, db=tmp / app / "warden.db")
            print(json.dumps(row), flush=True)
            rows.append(row)
        return rows
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        await slack.stop()
        if broker:
            broker.stop()


def spread(values: list[float], fmt: str) -> str:
    """min/median/max."""
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="200,1000,1500", help="offered events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of load per rate")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="the worker's database on PostgreSQL, not SQLite")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results: dict[float, list[dict[str, float]]] = {r: [] for r in rates}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        admin = stack.enter_context(private_postgres(Path(tmp) / "pg")) if args.postgres else None
        for n in range(args.reps):
            print(f"rep {n}", flush=True)
            url = None
            if admin:
                url = sqlalchemy_url(admin, f"bench_{n}")
                conn = await asyncpg.connect(admin)
                await conn.execute(f"CREATE DATABASE bench_{n}")
                await conn.close()
            for row in await rep(rates, args.seconds, url, Path(tmp)):
                results[row["rate"]].append(row)
    print(f"\nmin/median/max over {args.reps} reps, {args.seconds:g} s per rate, single-event messages, "
          f"{'PostgreSQL' if args.postgres else 'SQLite'}, "
          f"1 in {OUT_OF_SCOPE_EVERY} events opens an incident")
    print(f"{'offered/s':>9} {'finding p50 ms':>18} {'finding p99 ms':>18} {'root p50 ms':>18} {'root p99 ms':>18} "
          f"{'worker CPU %':>14} {'roots/expected':>15}")
    for rate, rows in results.items():
        def col(key: str, fmt: str, rows: list[dict[str, float]] = rows, scale: float = 1.0) -> str:
            return spread([r[key] * scale for r in rows], fmt)
        print(f"{rate:>9,.0f} {col('finding_p50_ms', '.0f'):>18} {col('finding_p99_ms', '.0f'):>18} "
              f"{col('root_p50_ms', '.0f'):>18} {col('root_p99_ms', '.0f'):>18} {col('cpu', '.0f', scale=100):>14} "
              f"{sum(int(r['roots']) for r in rows):>7}/{sum(int(r['findings']) for r in rows):<7}")


if __name__ == "__main__":
    asyncio.run(main())
