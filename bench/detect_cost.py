"""Detect cost per event before and after a change (argument scope and flows in issue 12, provenance in issue 26).

    .venv/bin/python bench/detect_cost.py [--reps 5] [--events 20000] [--before REV]

Three variants, each in its own process per rep, in turn, so noise hits them alike:
  A  before: the code and the bundled matrix at REV (default: the merge base with main), extracted by `git archive`;
  B  this code with A's matrix (what the new code costs a matrix that uses none of it);
  C  this code with this bundled matrix (lists, catalogue, constraints, untrusted_flow, flow rules, tiers).
Three event mixes: `throughput` (bench/throughput.py's events: tool calls of approved tools, 1% unapproved) and
`sessions` (the labelled sessions of tests/support/data/sessions, repeated with fresh ids), and `results` (the
throughput
events each carrying a 4 KB tool result, two agents in five reading it through an untrusted_input tool; code from
before tool results gets the same events without them). Each process pre-parses the
events, then times `detect` over them in a few passes with fresh state and keeps the fastest. Printed: µs/event
min/median/max per variant, and the ratios B/A and C/A per rep (min/median/max). Compare ratios, not absolute
figures.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SESSIONS = REPO / "tests" / "support" / "data" / "sessions" / "sessions.jsonl"


def throughput_events(n: int) -> list[dict[str, Any]]:
    sys.path.insert(0, str(REPO / "bench"))
    from throughput import make_event  # the same events as the throughput benchmark

    return [make_event(i) for i in range(n)]


def session_events(n: int) -> list[dict[str, Any]]:
    """The labelled sessions again and again, each copy with new event and session ids, one day later."""
    base = [json.loads(line) for line in SESSIONS.read_text("utf-8").splitlines()]
    out: list[dict[str, Any]] = []
    copy = 0
    while len(out) < n:
        for e in base:
            ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) + timedelta(days=copy)
            out.append({**e, "event_id": f"{e['event_id']}-c{copy}", "session_id": f"{e['session_id']}-c{copy}",
                        "ts": ts.isoformat()})
        copy += 1
    return out[:n]


# A 4 KB tool result as an agent reads it: mostly prose, with the addresses, links, ids and numbers mail carries,
# each paragraph's own (no value repeats, so nothing is cheaper for having been seen in the same text).
RESULT = "".join(
    f"From: accounts{k}@northwind-supplies.example\nSubject: Invoice INV-{3107 + k} and new bank details\n\n"
    "Dear customer, thank you for your order. The attached statement lists the deliveries of last month, the "
    "credit notes and the balance due; please review it with your team before the end of the week. "
    f"Questions: https://support.northwind-supplies.example/tickets/{48217 + k} or +44 20 7946 {1000 + k}. "
    f"Pay to GB33 BUKB 2020 1555 5555 {10 + k}, reference CX-{48217 + k}, 2026-11-{10 + k}. "
    for k in range(10))[:4096]
UNTRUSTED = {"billing-agent-1": "mail.read_inbox", "research-rag-1": "retrieval.fetch"}  # catalogue: untrusted_input


def result_events(n: int) -> list[dict[str, Any]]:
    """The throughput events, each tool call carrying a 4 KB result; two agents in five read it through an
    untrusted_input tool of their scope (their results are extracted with pieces), the others through theirs."""
    out = []
    for e in throughput_events(n):
        tool = dict(e["tool"])
        if tool["name"] != "shell.exec":
            tool["name"] = UNTRUSTED.get(e["agent"]["id"], tool["name"])
        tool["result"] = RESULT
        out.append({**e, "tool": tool})
    return out


MIXES = {"throughput": throughput_events, "sessions": session_events, "results": result_events}
PASSES = 4  # per process, each with fresh state; the fastest is kept


def child(mix: str, policy_path: str, n: int) -> None:
    """Runs in the variant's process: `sys.path[0]` is the code under test."""
    from service.runtime.catalogue import load
    from streams.detectors import DetectorState, detect
    from warden.contract.events import ActivityEvent, Tool

    policy = load(policy_path)
    raw = MIXES[mix](n)
    if "result" not in Tool.model_fields:  # code from before tool results: the same events without them
        raw = [{**e, "tool": {k: v for k, v in e["tool"].items() if k != "result"}} if "tool" in e else e
               for e in raw]
    events = [ActivityEvent.model_validate(e) for e in raw]
    best, findings = float("inf"), 0
    for _ in range(PASSES):  # the fastest pass: the one the other processes on the machine disturbed least
        state = DetectorState()
        gc.collect()
        findings = 0
        t0 = time.perf_counter()
        for ev in events:
            findings += len(detect(ev, policy, state))
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"us_per_event": best / n * 1e6, "findings": findings}))


def extract(rev: str, into: Path) -> Path:
    """The tree at `rev` (code and bundled matrix), read-only use: `git archive`, no checkout."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_variant(code: Path, policy: Path, mix: str, n: int) -> dict[str, float]:
    env = {**os.environ, "DETECT_COST_CODE": str(code)}
    out = subprocess.run([sys.executable, __file__, "--child", mix, "--policy", str(policy), "--events", str(n)],
                         capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def spread(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--before", default=None, help="git revision of 'before' (default: merge base with main)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--policy", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.policy, args.events)
        return
    rev = args.before or subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"], capture_output=True,
                                        text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        before = extract(rev, Path(tmp))
        variants = {"A": (before, before / "warden/examples/policy"),
                    "B": (REPO, before / "warden/examples/policy"),
                    "C": (REPO, REPO / "warden/examples/policy")}
        print(f"before = {rev[:12]}; {args.events} events per process; {args.reps} reps; µs/event min/median/max")
        for mix in MIXES:
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
            for _ in range(args.reps):
                for name, (code, policy) in variants.items():
                    runs[name].append(run_variant(code, policy, mix, args.events))
            print(f"\n{mix}:")
            for name, rows in runs.items():
                us = [r["us_per_event"] for r in rows]
                print(f"  {name}: {spread(us, '.2f')} µs/event, {rows[0]['findings'] / args.events:.3f} findings/event")
            for name in ("B", "C"):
                ratios = [b["us_per_event"] / a["us_per_event"] for a, b in zip(runs["A"], runs[name], strict=True)]
                print(f"  {name}/A: {spread(ratios, '.2f')}")


if __name__ == "__main__":
    _code = os.environ.get("DETECT_COST_CODE")
    sys.path.insert(0, _code if _code and "--child" in sys.argv else str(REPO))
    main()
