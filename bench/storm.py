"""The alert-storm probe of issue 32: 1,000 new incidents over 60 s across 3 Slack channels, two workers, a local Slack
Web API that enforces Slack's posting limit (1 message/s per channel, burst 3, then 429 with Retry-After).

    .venv/bin/python bench/storm.py [--incidents 1000] [--seconds 60] [--reps 3] [--per-incident]

Per rep: a fresh broker (Tansu, or WARDEN_BENCH_KAFKA_BOOTSTRAP), a PostgreSQL database (tests/support/pg_server.py,
started
once), the local Slack API (service.demo.slack_api_server, in this process, `rate=1, burst=3`) and two real workers
(`python -m service run`, one consumer group, one database, each with its own Slack URL) on the bundled policy plus
three storm workflows (50 agents each; responders ai-platform C0AIPLAT, finance-ops C0FINOPS, iam-team C0IAM). The
storm: `--incidents` tool calls, each by a random agent of a random storm workflow to a tool of its own (an
unapproved tool never seen before: a new incident each), paced evenly over `--seconds`, each stamped with the time it
is sent. `--per-incident` groups by every label (each incident its own group: every incident pages), to show what
grouping saves; the budget still applies.

Measured, from the database and the Slack API's own record of what it accepted:
- lost: incidents not in the database, or never named (by id) in an accepted message: a root (its metadata), or a
  digest's thread reply (`#id [severity] agent → target`);
- named after the storm's end: when the last incident was first named, after the last event was sent (goal ≤ 60 s);
- first page per group: for each group, its leader's root arrival at Slack minus its event's send time (goal ≤ 2 s;
  max and p50 over the groups);
- 429 share: posts answered 429 over all posts (goal ≤ 1%);
- most posts to one channel in any one second (a sliding window; goal ≤ the burst, 3);
- messages: posts accepted (roots, digests, thread replies), and chat.update calls besides.
Printed: one JSON line per rep, then min/median/max over the reps. Absolute figures; the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
from aiokafka import AIOKafkaProducer
from latency import FAST_GROUP_TIMINGS, free_port, wait_healthy, worker_env
from sqlalchemy import text

from responders.db import make_engine
from service.demo.slack_api_server import SlackApiServer
from service.runtime.broker import EmbeddedBroker
from service.runtime.settings import BUNDLED_POLICY, Settings
from service.runtime.topics import ensure_topics, topic_configs, topic_names
from tests.support.pg_server import private_postgres, sqlalchemy_url

CHANNELS = {"storm-a": ("ai-platform", "C0AIPLAT"), "storm-b": ("finance-ops", "C0FINOPS"),
            "storm-c": ("iam-team", "C0IAM")}
AGENTS_PER_WORKFLOW = 50
TOKEN = "xoxb-storm"
NAMED = re.compile(r"#(\d+) \[")


def storm_policy(folder: Path, per_incident: bool) -> Path:
    """The bundled matrix plus three storm workflows, each a fleet of agents allowed no tool: every call pages."""
    shutil.copytree(BUNDLED_POLICY, folder)
    workflows = {wf: {"description": "a fleet hit by one compromised prompt template",
                      "agents": [f"{wf}-{i}" for i in range(AGENTS_PER_WORKFLOW)], "risk": "high", "mode": "agentic",
                      "approver": "priya", "detector": "secops", "responder": responder,
                      "scope": {"tools": ["kb.search"]}} for wf, (responder, _) in CHANNELS.items()}
    doc: dict[str, Any] = {"workflows": workflows}
    if per_incident:
        doc["notifications"] = {"group_by": ["workflow", "rule", "severity", "agent", "target"]}
    (folder / "90-storm.yaml").write_text(json.dumps(doc))
    return folder


async def produce_storm(bootstrap: str, topic: str, n: int, seconds: float, run: str) -> tuple[dict[str, float], float]:
    """`n` events paced evenly over `seconds`; the send time of each by its tool (its incident's target)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    rng = random.Random(run)
    start = time.monotonic()
    try:
        for i in range(n):
            due = start + i * seconds / n
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            wf = rng.choice(list(CHANNELS))
            agent = f"{wf}-{rng.randrange(AGENTS_PER_WORKFLOW)}"
            tool = f"storm.{run}.{i}"
            event = {"event_id": f"{run}-{i}", "ts": datetime.now(UTC).isoformat(), "kind": "tool_call",
                     "agent": {"id": agent}, "tool": {"name": tool}}
            sent[tool] = time.time()
            await producer.send(topic, json.dumps(event).encode(), key=agent.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return sent, time.time()


async def warm_up(bootstrap: str, topic: str, url: str, slack: SlackApiServer) -> None:
    """Eight agents no workflow lists, one event each (spread over the partitions): every one recorded and the
    security owner paged, so both workers' every path has run before the storm."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(8):
            agent = f"warm-{uuid.uuid4().hex[:6]}-{i}"
            event = {"event_id": f"{agent}-e", "ts": datetime.now(UTC).isoformat(), "kind": "tool_call",
                     "agent": {"id": agent}, "tool": {"name": "warm.up"}}
            await producer.send_and_wait(topic, json.dumps(event).encode(), key=agent.encode())
    finally:
        await producer.stop()
    engine = make_engine(url)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                n = (await conn.execute(text("SELECT count(*) FROM incidents WHERE agent_id LIKE 'warm-%'"))
                     ).scalar_one()
            if n >= 8 and slack.roots("C0SECOPS"):
                return
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    raise RuntimeError("the warm-up incidents were never recorded and paged")


def names(slack: SlackApiServer) -> dict[int, float]:
    """When each incident was first named in an accepted message: a root (its metadata) or a digest's thread."""
    first: dict[int, float] = {}

    def seen(incident_id: int, at: float) -> None:
        first[incident_id] = min(at, first.get(incident_id, at))

    for m in slack.messages:
        payload = (m.metadata or {}).get("event_payload") or {}
        if (m.metadata or {}).get("event_type") == "warden_incident" and m.thread_ts is None:
            seen(int(payload["incident_id"]), m.at)
        for found in NAMED.findall(m.text or ""):
            seen(int(found), m.at)
    return first


async def incidents_of(url: str, run: str) -> tuple[dict[int, str], dict[int, int], list[tuple[int, int]],
                                                     dict[int, float]]:
    """(incident id → target, incident id → group id, [(group id, leader id)], incident id → opened at) of this
    run's incidents."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, target, group_id, opened_at FROM incidents "
                                            "WHERE target LIKE :p"), {"p": f"storm.{run}.%"})).all()
            groups = (await conn.execute(text("SELECT id, leader_id FROM notify_groups"))).all()
    finally:
        await engine.dispose()
    return ({i: t for i, t, _, _ in rows}, {i: g for i, _, g, _ in rows if g is not None},
            [(g, lid) for g, lid in groups], {i: o.replace(tzinfo=UTC).timestamp() for i, _, _, o in rows})


async def measure(url: str, run: str, n: int, slack: SlackApiServer, *, sent: dict[str, float], storm_end: float,
                  t0: float) -> dict[str, Any]:
    """Wait (up to 10 minutes) until every incident is recorded and named, then the figures of the rep."""
    deadline = time.monotonic() + 600
    targets: dict[int, str] = {}
    while time.monotonic() < deadline:
        targets, group_of, leaders, _ = await incidents_of(url, run)
        named = names(slack)
        if len(targets) >= n and all(i in named for i in targets):
            break
        await asyncio.sleep(1.0)
    targets, group_of, leaders, opened = await incidents_of(url, run)
    recorded = [opened[i] - sent[t] for i, t in targets.items()]
    named = names(slack)
    ours = {i: named[i] for i in targets if i in named}
    storm_groups = {g: lid for g, lid in leaders if lid in targets}
    firsts = [named[lid] - sent[targets[lid]] for lid in storm_groups.values() if lid in named]
    posts = [r for r in slack.calls("chat.postMessage") if r.at >= t0]  # the storm's (not the warm-up's)
    limited = [r for r in slack.limited if r.at >= t0]
    accepted = [m for m in slack.messages if m.at >= t0]
    return {
        "incidents": n, "recorded": len(targets), "lost": n - len(ours),
        "named_after_end_s": (max(ours.values()) - storm_end) if ours else None,
        "groups": len(storm_groups), "members": sum(1 for i in targets if i in group_of) - len(storm_groups),
        "recorded_p50_s": statistics.median(recorded) if recorded else None,
        "recorded_max_s": max(recorded) if recorded else None,
        "first_page_max_s": max(firsts) if firsts else None,
        "first_page_p50_s": statistics.median(firsts) if firsts else None,
        "posts": len(posts), "answered_429": len(limited),
        "share_429": len(limited) / len(posts) if posts else 0.0,
        "most_per_channel_second": max((slack.most_in_a_second(c) for _, c in CHANNELS.values()), default=0),
        "messages": len(accepted), "updates": len([r for r in slack.calls("chat.update") if r.at >= t0]),
        "per_channel": {c: len([m for m in accepted if m.channel == c]) for _, c in CHANNELS.values()},
    }


async def rep(n: int, seconds: float, admin: str, tmp: Path, index: int, *, per_incident: bool) -> dict[str, Any]:
    bootstrap = os.environ.get("WARDEN_BENCH_KAFKA_BOOTSTRAP")
    broker = None if bootstrap else EmbeddedBroker().start()
    bootstrap = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    slack = await SlackApiServer(token=TOKEN, rate=1.0, burst=3).start()
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE storm_{index}")
    await conn.close()
    url = sqlalchemy_url(admin, f"storm_{index}")
    app = f"storm-{uuid.uuid4().hex[:6]}"
    policy = storm_policy(tmp / f"policy-{index}", per_incident)
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    ports = [free_port(), free_port()]
    try:
        env0 = worker_env(bootstrap, app, tmp / f"{app}-a", port=ports[0])
        settings = Settings(kafka_bootstrap=bootstrap, app_id=app, topic_partitions=4, **{
            k.removeprefix("WARDEN_").lower(): v for k, v in env0.items()
            if k.startswith("WARDEN_TOPIC_") and k != "WARDEN_TOPIC_PARTITIONS"})
        # Made once here, so the two workers starting together do not race to make them.
        await ensure_topics(bootstrap, topic_names(settings), 4, configs=topic_configs(settings))
        for name, port in zip("ab", ports, strict=True):
            env = worker_env(bootstrap, app, tmp / f"{app}-{name}", port=port) | FAST_GROUP_TIMINGS
            env.update({"WARDEN_SLACK_TOKEN": TOKEN, "WARDEN_SLACK_API_URL": slack.url_for(name),
                        "WARDEN_DATABASE_URL": url, "WARDEN_POLICY": str(policy)})
            log = (tmp / f"{app}-{name}.log").open("wb")
            procs.append((subprocess.Popen([sys.executable, "-m", "service", "run"], env=env, stdout=log,
                                           stderr=log), log))
        for (proc, _), port in zip(procs, ports, strict=True):
            await wait_healthy(port, proc, timeout_s=90)
        await asyncio.sleep(8)  # both workers in the group (a rebalance after the second joins)
        await warm_up(bootstrap, f"{app}.activity", url, slack)
        run = f"s{uuid.uuid4().hex[:5]}"
        t0 = time.time()
        sent, storm_end = await produce_storm(bootstrap, f"{app}.activity", n, seconds, run)
        return await measure(url, run, n, slack, sent=sent, storm_end=storm_end, t0=t0)
    finally:
        for proc, log in procs:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            log.close()
        await slack.stop()
        if broker:
            broker.stop()


def spread(values: list[float], fmt: str) -> str:
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--per-incident", action="store_true", help="every label in the group key: no grouping")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, private_postgres(Path(tmp)) as admin:
        for index in range(args.reps):
            row = await rep(args.incidents, args.seconds, admin, Path(tmp), index, per_incident=args.per_incident)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\nmin/median/max over {args.reps} reps: {args.incidents} incidents over {args.seconds:g} s, 3 channels, "
          f"two workers, PostgreSQL, Slack API at 1 post/s per channel (burst 3)"
          + (", one group per incident" if args.per_incident else ""))
    for key, fmt, what in (
            ("lost", "d", "lost (not recorded, or never named in an accepted message)"),
            ("named_after_end_s", ".1f", "every incident named, s after the storm's end"),
            ("first_page_max_s", ".2f", "first page of a group, slowest group (s after its event)"),
            ("first_page_p50_s", ".2f", "first page of a group, median group (s)"),
            ("groups", "d", "groups (first pages)"),
            ("recorded_p50_s", ".2f", "event sent → incident recorded, median (s)"),
            ("recorded_max_s", ".2f", "event sent → incident recorded, slowest (s)"),
            ("share_429", ".3%", "posts answered 429"),
            ("most_per_channel_second", "d", "most posts to one channel in one second"),
            ("messages", "d", "messages posted (roots, digests, thread replies)"),
            ("updates", "d", "chat.update calls (digests refreshed in place)")):
        values = [r[key] for r in rows if r[key] is not None]
        print(f"  {what:<70} {spread(values, fmt) if values else '-'}")


if __name__ == "__main__":
    asyncio.run(main())
