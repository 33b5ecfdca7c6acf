"""Detection cost must not grow with the matrix: run detect() over the same events with 10 and 10,000 workflows.

Run: .venv/bin/python bench/matrix_scale.py [--events N] [--repeat R]

Two workloads, each with the same sequence of kinds, outcomes and draws for both matrices:
- same workload: 20 active agents (10 workflows' worth), spread evenly over the matrix. Only the matrix size
  differs, so the ratio is the cost of the matrix itself; the goal is a ratio <= 1.2.
- whole matrix active: every event from a random workflow of the matrix. With 10,000 workflows that is 20,000
  distinct agents, so per-agent window state and CPU-cache misses grow too: a worst case, printed for reference.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.runtime.catalogue import CATALOGUE
from streams.detectors import DetectorState, detect
from warden.contract.events import ActivityEvent
from warden.contract.matrix import Matrix
from warden.policy import Policy, build_policy

OWNERS = 50
START = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def generate_matrix(workflows: int) -> Matrix:
    """A matrix of `workflows` workflows with distinct agents, tools, data and secrets, plus custom rules."""
    owners = {f"owner-{i}": {"name": f"Owner {i}", "contacts": {"slack": f"U0OWNER{i}"}} for i in range(OWNERS)}
    wfs: dict[str, Any] = {}
    for i in range(workflows):
        o = [f"owner-{(i + k) % OWNERS}" for k in range(4)]
        wfs[f"wf-{i}"] = {
            "agents": [f"agent-{i}-a", f"agent-{i}-b"],
            "risk": ("low", "high", "critical")[i % 3],
            "mode": ("chat", "agentic")[i % 2],
            "approver": o[0], "detector": o[1], "responder": o[2], "business_owner": o[0], "data_owner": o[3],
            "escalation": [{"owner": o[2], "ack_timeout": "10m"}, {"owner": o[1], "ack_timeout": "20m"}],
            "scope": {
                "tools": [f"svc{i}.read", f"svc{i}.write_*", "search.*"],
                "data": [f"s3://bucket-{i}/*", f"repo://team-{i}/*"],
                "max_classification": "confidential",
                "secrets": [f"vault://wf-{i}/*"],
                "identity_changes": {"require_approval": ["grant_*"], "window": "30m"},
                "limits": {"tool_calls": {"max": 500, "window": "1m"},
                           "identical_retries": {"max": 5, "window": "5m"}},
            },
        }
    custom = [
        {"id": "large-amount", "severity": "high",
         "condition": 'event.kind == "tool_call" && event.tool.name == "svc1.write_refund" '
                      "&& double(event.tool.arguments.amount) > 500.0"},
        {"id": "injection-marker", "severity": "medium", "mode": "shadow",
         "condition": 'event.kind == "completion" && has(event.content.output) '
                      '&& event.content.output.contains("ignore previous instructions")'},
    ]
    return Matrix.model_validate({
        "defaults": {"security_owner": "owner-0"},
        "owners": owners,
        "workflows": wfs,
        "rules": {"custom": custom},
    })


def generate_events(n: int, active: list[int]) -> list[ActivityEvent]:
    """The same mix of kinds and outcomes for any matrix; each event comes from one of the `active` workflows."""
    rng = random.Random(42)  # the same draws for every matrix
    events = []
    for j in range(n):
        w = active[rng.randrange(len(active))]
        agent = f"agent-{w}-{'ab'[j % 2]}"
        base: dict[str, Any] = {
            "event_id": f"e{j}", "ts": (START + timedelta(milliseconds=10 * j)).isoformat(),
            "agent": {"id": agent}, "session_id": f"s{j % 97}",
        }
        slot = j % 10
        if slot in (0, 1, 2):
            base |= {"kind": "tool_call", "tool": {"name": f"svc{w}.read", "arguments": {"id": j}}}
        elif slot == 3:
            base |= {"kind": "tool_call", "tool": {"name": "shell.exec", "arguments": {"cmd": f"ls {j}"}}}
        elif slot == 4:
            ok = j % 20 == 4
            base |= {"kind": "secret_access",
                     "resource": {"type": "secret", "id": f"vault://wf-{w}/k" if ok else "vault://prod/root"}}
        elif slot == 5:
            base |= {"kind": "data_access",
                     "resource": {"type": "dataset", "id": f"s3://bucket-{w}/x", "classification": "internal"}}
        elif slot == 6:
            base |= {"kind": "approval", "approval": {"approver": "owner-x", "decision": "approved", "ref": f"u{j}"}}
        elif slot == 7:
            base |= {"kind": "identity_change", "identity_change": {"operation": "grant_role", "target": f"u{j}"}}
        elif slot == 8:
            base |= {"kind": "completion", "content": {"output": "done"}}
        else:
            base |= {"kind": "prompt", "content": {"prompt": "hello"}}
        if j % 50 == 0:
            base["agent"] = {"id": f"stray-{j}"}  # an unowned agent
        events.append(ActivityEvent.model_validate(base))
    return events


def run_once(policy: Policy, events: list[ActivityEvent]) -> tuple[float, int]:
    """events/s for one pass of detect() over `events` with fresh state, and the findings it made."""
    state = DetectorState()
    gc.collect()
    started = time.perf_counter()
    findings = sum(len(detect(ev, policy, state)) for ev in events)
    return len(events) / (time.perf_counter() - started), findings


def best_rates(policies: dict[int, Policy], events: dict[int, list[ActivityEvent]],
               repeat: int) -> dict[int, tuple[float, int]]:
    """Best-of-`repeat` per matrix, the runs interleaved so that warm-up and machine noise hit both alike."""
    best: dict[int, tuple[float, int]] = {size: (0.0, 0) for size in policies}
    for _ in range(repeat):
        for size, policy in policies.items():
            eps, findings = run_once(policy, events[size])
            best[size] = (max(best[size][0], eps), findings)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    policies = {}
    for size in (10, 10_000):
        started = time.perf_counter()
        policies[size] = build_policy(generate_matrix(size), CATALOGUE, sha256=f"bench-{size}")
        print(f"{size:>6} workflows: matrix built and indexed in {time.perf_counter() - started:.2f}s")
    workloads = {
        "same workload": {size: [k * (size // 10) for k in range(10)] for size in policies},
        "whole matrix active": {size: list(range(size)) for size in policies},
    }
    for name, active in workloads.items():
        events = {size: generate_events(args.events, active[size]) for size in policies}
        best = best_rates(policies, events, args.repeat)
        rates = {size: eps for size, (eps, _) in best.items()}
        for size, (eps, findings) in best.items():
            print(f"{name:>19}, {size:>6} workflows: {eps:>8,.0f} events/s ({findings} findings per run)")
        goal = " (goal <= 1.2)" if name == "same workload" else " (worst case, for reference)"
        print(f"{name:>19}: cost ratio 10,000 / 10 workflows = {rates[10] / rates[10_000]:.2f}{goal}")


if __name__ == "__main__":
    main()
