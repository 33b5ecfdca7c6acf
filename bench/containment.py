"""Time to contain under the auto gate: event produced → token confirmed revoked at a real oidc-provider.

    .venv/bin/python bench/containment.py [--incidents 200] [--rate 20] [--reps 3]

A real worker (embedded Tansu broker, SQLite) with a policy that binds `unowned_agent` to the shipped
`revoke_token` playbook under `gate: auto`. Each incident is one event from a new unowned agent carrying its own
client_credentials token from oidc-provider, produced at `--rate` events/s. A step is done only once the issuer's
introspection says the token is inactive, so (b) = the step's `ended_at` − the event's produce time.

(a) the reference, measured in the same run against the same server: one revocation + one introspection made
directly with aiohttp (the floor any containment path pays). Figures: p50/p99 of (b) in ms, and b/a ratios,
min/median/max over the reps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from responders.db.models import ContainmentStep, Incident
from responders.incident_responder import IncidentResponder
from service.demo import oauth_server
from service.runtime.broker import EmbeddedBroker
from service.runtime.settings import BUNDLED_POLICY, Settings
from service.runtime.worker import Runtime

SECRET_VAR = "WARDEN_BENCH_IDP_SECRET"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_policy(folder: Path, server: oauth_server.OAuthServer) -> Path:
    shutil.copytree(BUNDLED_POLICY, folder)
    rules = folder / "20-rules.yaml"
    doc = yaml.safe_load(rules.read_text())
    doc["issuers"] = {"corp-idp": server.matrix_issuer(f"env:{SECRET_VAR}")}
    doc["playbooks"] = [{"rules": ["unowned_agent"], "playbook": "revoke_token", "gate": "auto",
                         "min_severity": "low"}]
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


async def reference(server: oauth_server.OAuthServer, tokens: list[str]) -> list[float]:
    """Direct revocation + introspection per token, sequentially: the cost of the two calls alone."""
    auth = {"Authorization": aiohttp.BasicAuth(server.client_id, server.client_secret).encode()}
    out = []
    async with aiohttp.ClientSession() as http:
        for token in tokens:
            started = time.perf_counter()
            async with http.post(server.revocation_endpoint, data={"token": token}, headers=auth) as r:
                assert r.status == 200, r.status
            async with http.post(server.introspection_endpoint, data={"token": token}, headers=auth) as r:
                assert (await r.json())["active"] is False
            out.append(time.perf_counter() - started)
    return out


async def one_rep(server: oauth_server.OAuthServer, bootstrap: str, n: int, rate: float, tmp: Path) -> list[float]:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=bootstrap, policy=bench_policy(tmp / f"policy-{suffix}", server),
        data_dir=tmp / f"data-{suffix}", web_bind="127.0.0.1:0", app_id=f"bench-{suffix}",
        topic_activity=f"b{suffix}.activity", topic_findings=f"b{suffix}.findings", topic_dlq=f"b{suffix}.dlq",
        topic_control=f"b{suffix}.control", topic_revocations=f"b{suffix}.revocations",
        kafka_session_timeout_s=6, kafka_heartbeat_interval_s=1, kafka_rebalance_timeout_s=3,
    )
    tokens = [server.issue_token() for _ in range(n)]
    produced: dict[str, float] = {}
    async with Runtime(settings) as rt:
        assert isinstance(rt.responder, IncidentResponder)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            await asyncio.sleep(3.0)  # the group has settled: measure containment, not the first join
            for i, token in enumerate(tokens):
                agent = f"bench-agent-{suffix}-{i}"
                value = json.dumps({
                    "event_id": f"{suffix}-{i}", "ts": datetime.now(UTC).isoformat(), "kind": "tool_call",
                    "agent": {"id": agent}, "tool": {"name": "shell.exec"},
                    "credential": {"id": f"kid-{i}", "issuer": server.issuer, "token": token}}).encode()
                await producer.send_and_wait(settings.topic_activity, value, key=agent.encode())
                produced[agent] = time.time()
                await asyncio.sleep(1.0 / rate)
        finally:
            await producer.stop()
        store = rt.responder.store
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with store.sessions.begin() as s:
                rows = list((await s.execute(select(ContainmentStep))).scalars())
            if len(rows) == n and all(r.status in ("done", "failed") for r in rows):
                break
            await asyncio.sleep(0.5)
        async with store.sessions.begin() as s:
            incidents = {i.id: i for i in (await s.execute(select(Incident))).scalars()}
    failed = [r for r in rows if r.status != "done"]
    if failed or len(rows) != n:
        raise SystemExit(f"{len(failed)} steps not done of {len(rows)} (expected {n}): "
                         f"{[r.last_error for r in failed][:3]}")
    still_active = sum(1 for t in tokens[:20] if server.introspect(t)["active"])
    assert still_active == 0, f"{still_active} of 20 sampled tokens still active"
    assert all(r.detail.get("confirmed") == "true" for r in rows)
    opened = [incidents[r.incident_id].opened_at.timestamp() - produced[incidents[r.incident_id].agent_id]
              for r in rows]
    print(f"  of which event → incident opened: p50 {percentile(opened, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(opened, 0.99) * 1000:.0f} ms", flush=True)
    return [r.ended_at.timestamp() - produced[incidents[r.incident_id].agent_id] for r in rows if r.ended_at]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bootstrap", help="an external broker (e.g. tests/support/kafka/apache_kafka.sh start DIR); "
                        "default: the embedded Tansu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-contain-"))
    broker = None if args.bootstrap else EmbeddedBroker(log_path=tmp / "tansu.log").start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    print(f"broker: {'external ' + args.bootstrap if args.bootstrap else 'embedded Tansu'}", flush=True)
    results = []
    try:
        with oauth_server.start(log_path=tmp / "oauth.log") as server:
            os.environ[SECRET_VAR] = server.client_secret
            for rep in range(args.reps):
                ref = await reference(server, [server.issue_token() for _ in range(50)])
                lat = await one_rep(server, bootstrap, args.incidents, args.rate, tmp)
                a50, b50, b99 = statistics.median(ref), percentile(lat, 0.5), percentile(lat, 0.99)
                results.append((a50, b50, b99))
                print(f"rep {rep + 1}: reference revoke+introspect p50 {a50 * 1000:.1f} ms; time to contain "
                      f"p50 {b50 * 1000:.0f} ms, p99 {b99 * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms "
                      f"over {len(lat)} incidents at {args.rate:g}/s; b50/a50 {b50 / a50:.1f}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def mmm(values: list[float]) -> str:
        return f"min {min(values):.3g} / median {statistics.median(values):.3g} / max {max(values):.3g}"

    print(f"time to contain p50 (ms): {mmm([r[1] * 1000 for r in results])}")
    print(f"time to contain p99 (ms): {mmm([r[2] * 1000 for r in results])}  (goal: under 1000)")
    print(f"p50 / reference p50:      {mmm([r[1] / r[0] for r in results])}")
    print(f"p99 / reference p50:      {mmm([r[2] / r[0] for r in results])}")


if __name__ == "__main__":
    asyncio.run(main())
