"""`warden policy learn` over a million recorded events: wall time and peak memory (issue 29's goal: under a minute
and under 500 MB), min / median / max over runs, each run a fresh `warden` process.

    .venv/bin/python bench/learn_scale.py [--events 1000000] [--runs 3]
    .venv/bin/python bench/learn_scale.py --topic HOST:PORT [--events 200000] [--runs 3]

The events are generated (deterministic, seeded) as JSON Lines against the bundled matrix: its agents and a few
unknown ones, tool calls with addresses, URLs, amounts, ids and free text, data and secret reads, identity changes
and approvals, in sessions of about ten events. The file is written once to a temporary folder and removed after.

With --topic, the same events go once to a new topic of that (plaintext) Kafka, one event per message keyed by
agent, as gateways produce them, with record times in the last hour; each run is then `warden policy learn --since
2h` on that topic, and the read rate is the records in the range over the time the read took (the command's JSON
summary), the rest of the run being start-up, the draft and its lint.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARDEN = [sys.executable, "-m", "service"]
POLICY = ROOT / "warden" / "examples" / "policy"
AGENTS = ["billing-agent-1", "iam-agent-1", "research-rag-1", "compliance-agent-1", "support-bot-1", "support-bot-2",
          *(f"shadow-agent-{n}" for n in range(8))]


def _event(rng: random.Random, n: int) -> dict[str, object]:
    agent = AGENTS[rng.randrange(len(AGENTS))]
    base: dict[str, object] = {"event_id": f"ev-{n}", "ts": f"2026-11-{1 + n // 100_000:02d}T{(n // 3600) % 24:02d}:"
                               f"{(n // 60) % 60:02d}:{n % 60:02d}Z", "agent": {"id": agent},
                               "session_id": f"{agent}/s-{n // 10}"}
    roll = rng.random()
    if roll < 0.05:
        return {**base, "kind": "data_access", "resource": {"type": "dataset", "id": f"db://billing/invoices/"
                                                            f"INV-{rng.randrange(10_000):05d}",
                                                            "classification": "confidential"}}
    if roll < 0.07:
        return {**base, "kind": "secret_access", "resource": {"type": "secret",
                                                              "id": f"vault://billing/key-{rng.randrange(4)}"}}
    if roll < 0.08:
        return {**base, "kind": "approval", "approval": {"approver": "jordan", "decision": "approved",
                                                         "ref": f"user:u{rng.randrange(500)}"}}
    if roll < 0.09:
        return {**base, "kind": "identity_change",
                "identity_change": {"operation": "grant_role", "target": f"user:u{rng.randrange(500)}",
                                    "entitlement": "support-agent"}}
    tool = rng.choice(["mail.send", "billing.pay_vendor", "web.fetch", "ticket.read", "kb.search", "mail.read_inbox",
                       "docs.share", "billing.lookup_invoice"])
    arguments: dict[str, object] = {
        "mail.send": {"to": [f"u{rng.randrange(300)}@{rng.choice(['example.com', 'eu.example.com'])}"],
                      "subject": f"Invoice {rng.randrange(10_000)} paid", "body": "Hello, " * rng.randrange(1, 20)},
        "billing.pay_vendor": {"payee": rng.choice(["acme-logistics", "globex-cloud", "initech-office"]),
                               "amount": round(rng.uniform(10, 5000), 2), "currency": "EUR"},
        "web.fetch": {"url": f"https://{rng.choice(['arxiv.org', 'data.worldbank.org'])}/abs/{rng.randrange(10**6)}"},
        "ticket.read": {"id": f"JML-{rng.randrange(10**5)}"},
        "kb.search": {"q": f"how do I reset {rng.randrange(1000)}"},
        "mail.read_inbox": {"folder": rng.choice(["inbox", "bills"])},
        "docs.share": {"doc": f"repo://analytics/r{rng.randrange(100)}", "with": [f"a{rng.randrange(50)}@example.com"]},
        "billing.lookup_invoice": {"invoice": f"INV-{rng.randrange(10**5):05d}"},
    }[tool]
    return {**base, "kind": "tool_call", "tool": {"name": tool, "arguments": arguments}}


def generate(path: Path, events: int) -> None:
    rng = random.Random(29)
    with path.open("w") as f:
        for n in range(events):
            f.write(json.dumps(_event(rng, n)) + "\n")


def run(events: Path, out: Path, topic: tuple[str, str] | None = None) -> tuple[float, float, float | None]:
    """(seconds, peak RSS in MB, topic records read per second or None) of one `warden policy learn` process."""
    source = ["--since", "2h", "-o", "json"] if topic else [str(events)]
    env = {**os.environ, "WARDEN_KAFKA_BOOTSTRAP": topic[0], "WARDEN_TOPIC_ACTIVITY": topic[1]} if topic else None
    start = time.perf_counter()
    proc = subprocess.Popen([*WARDEN, "policy", "learn", *source, "--policy", str(POLICY), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"warden policy learn failed (exit {os.waitstatus_to_exitcode(status)})")
    rate = None
    if topic:
        read = json.loads(output)["summary"]["topic"]
        rate = read["records"] / read["seconds"]
    return seconds, usage.ru_maxrss / 1024, rate  # Linux: KiB


def to_topic(events: Path, bootstrap: str, partitions: int = 4) -> str:
    """The events, one message each keyed by agent, on a new topic; record times spread over the last hour."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from service.runtime.topics import ensure_topics

    topic = f"bench-learn-{os.getpid()}-{int(time.time())}"
    lines = events.read_bytes().splitlines()
    now = int(time.time() * 1000)

    async def send() -> None:
        await ensure_topics(bootstrap, [topic], partitions)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024,
                                    compression_type=None)
        await producer.start()
        try:
            for start in range(0, len(lines), 10_000):
                sent = []
                for n, line in enumerate(lines[start:start + 10_000], start):
                    key = json.loads(line)["agent"]["id"].encode()
                    sent.append(await producer.send(topic, line, key=key,
                                                    timestamp_ms=now - 3_600_000 + n * 3_000_000 // len(lines)))
                await asyncio.gather(*sent)
        finally:
            await producer.stop()

    started = time.perf_counter()
    asyncio.run(send())
    print(f"produced {len(lines)} messages to {topic} in {time.perf_counter() - started:.1f}s")
    return topic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--topic", metavar="BOOTSTRAP", help="Read the events from a topic of this Kafka instead.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        generate(events, args.events)
        size = events.stat().st_size / 2**20
        topic = (args.topic, to_topic(events, args.topic)) if args.topic else None
        print(f"{args.events} events, {size:.0f} MiB of JSON Lines{' on a topic' if topic else ''}; {args.runs} runs "
              f"of `warden policy learn`, {os.cpu_count()} CPUs (shared)")
        results = [run(events, Path(tmp) / f"draft-{n}", topic) for n in range(args.runs)]
    for label, values, unit, goal in (("time", [r[0] for r in results], "s", 60),
                                      ("peak RSS", [r[1] for r in results], "MB", 500)):
        print(f"{label:<9} min {min(values):7.1f} {unit}  median {statistics.median(values):7.1f} {unit}  "
              f"max {max(values):7.1f} {unit}  (goal < {goal} {unit})")
    print(f"events/s (median): {args.events / statistics.median(r[0] for r in results):,.0f}")
    rates = [r[2] for r in results if r[2] is not None]
    if rates:
        print(f"topic read (records/s, the read alone): min {min(rates):,.0f}  median {statistics.median(rates):,.0f}"
              f"  max {max(rates):,.0f}")


if __name__ == "__main__":
    main()
