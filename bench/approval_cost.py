"""What a gateway's approval request costs, against the detect cost of the same action as an event, in one run.

    .venv/bin/python bench/approval_cost.py [--reps 5] [--n 5000] [--http 300]

Per rep, in turn: A `detect` on the activity event the request would be (the hot path's reference); B the verdict
(`streams.verdict.judge`, the same scope detectors plus the gates) on the request; C a whole `POST
/v1/approvals` round trip (aiohttp client → the worker's route → verdict → record with two hash-chained timeline
entries in SQLite → answer) for allowed requests, one at a time. Printed: µs (A, B) and ms (C) per request,
min/median/max over the reps, and the ratio B/A per rep. Compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from responders.api.approval_routes import ApprovalApi  # after the path is set
from responders.approvals.desk import ApprovalDesk
from responders.db import make_engine, migrate
from service.runtime.catalogue import load
from service.runtime.settings import BUNDLED_POLICY
from streams.detectors import DetectorState, detect
from streams.verdict import as_event, judge
from warden.contract.approval_requests import ApprovalRequest

POLICY = load(BUNDLED_POLICY)
BODIES = [
    {"agent": {"id": "iam-agent-1"}, "identity_change": {"operation": "grant_role", "target": "user:kim"}},
    {"agent": {"id": "iam-agent-1"}, "tool": {"name": "directory.lookup_user", "arguments": {"user": "user:kim"}}},
    {"agent": {"id": "billing-agent-1"}, "tool": {"name": "billing.pay_vendor",
                                                   "arguments": {"payee": "acme-logistics", "amount": 10}}},
    {"agent": {"id": "ghost"}, "tool": {"name": "shell.exec", "arguments": {"cmd": "id"}}},
]
TOKEN = "bench-gateway-token-0123456789"


def pure(n: int) -> tuple[float, float]:
    """µs per detect (A) and per verdict (B) over n requests of the mix."""
    now = datetime.now(UTC)
    requests = [ApprovalRequest.model_validate(BODIES[i % len(BODIES)]) for i in range(n)]
    events = [as_event(r, f"r{i}", now) for i, r in enumerate(requests)]
    gc.collect()
    state = DetectorState()
    t0 = time.perf_counter()
    for ev in events:
        detect(ev, POLICY, state)
    a = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i, r in enumerate(requests):
        judge(r, f"r{i}", POLICY, now)
    b = (time.perf_counter() - t0) / n * 1e6
    return a, b


async def http(n: int, folder: Path) -> float:
    """ms per POST /v1/approvals round trip (allowed requests: recorded, answered 200)."""
    engine = make_engine(f"sqlite+aiosqlite:///{folder / 'bench.db'}")
    await migrate(engine)
    desk = ApprovalDesk(engine, judge=lambda r, rid, now: judge(r, rid, POLICY, now), clock=lambda: datetime.now(UTC),
                        live_policy=lambda: POLICY.sha256)
    app = web.Application()
    ApprovalApi(desk, [(TOKEN.encode(), "bench")], serve_openapi=False).install(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    body = BODIES[1]
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
            t0 = time.perf_counter()
            for _ in range(n):
                async with s.post(f"http://127.0.0.1:{port}/v1/approvals", json=body) as r:
                    assert r.status == 200, await r.text()
            return (time.perf_counter() - t0) / n * 1e3
    finally:
        await runner.cleanup()
        await engine.dispose()


def spread(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--http", type=int, default=300)
    args = parser.parse_args()
    a, b, c = [], [], []
    for _ in range(args.reps):
        da, db = pure(args.n)
        a.append(da)
        b.append(db)
        with tempfile.TemporaryDirectory() as tmp:
            c.append(asyncio.run(http(args.http, Path(tmp))))
    print(f"A detect on the event      µs/request min/median/max: {spread(a)}")
    print(f"B verdict on the request   µs/request min/median/max: {spread(b)}")
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(f"B/A per rep                              min/median/max: {spread(ratios)}")
    print(f"C POST /v1/approvals (SQLite) ms/request min/median/max: {spread(c)}")


if __name__ == "__main__":
    main()
