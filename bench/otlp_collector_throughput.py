"""OTLP ingest throughput through the real OpenTelemetry Collector, in events/s, end to end.

    WARDEN_BENCH_KAFKA_BOOTSTRAP=host:port .venv/bin/python bench/otlp_collector_throughput.py [--traces 500] [--reps 3]

Apache Kafka only (the Collector's kafka exporter cannot talk to Tansu: tests/support/kafka/apache_kafka.sh starts one).
Per rep: a Warden worker and the Collector built from tests/support/otel/ (the configuration of docs/otel.md, protobuf,
partitioned by trace id) on fresh topics; a separate process, the agent, makes `--traces` traces of 100 spans with the
OpenTelemetry SDK (99 `execute_tool` spans exported before the `invoke_agent` parent that names the agent, 1% out of
scope; the same shape as bench/otlp_throughput.py), then, on the signal, exports them all over OTLP/gRPC with the
SDK's exporter, 512 spans a request (its BatchSpanProcessor's batch).

(e2e) from the signal to the worker's commit after which every event and finding is out: the SDK's export, the
      Collector's receiver, batch processor and kafka exporter, the broker, and Warden's ingest and detection;
(w)   Warden alone in the same run: from the first message it judged to that commit (as bench/otlp_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPANS_PER_TRACE = 100
OUT_OF_SCOPE_EVERY = 100
AGENTS = {"support-bot-1": "kb.search", "billing-agent-1": "billing.lookup_invoice",
          "research-rag-1": "retrieval.search", "compliance-agent-1": "evidence.collect"}


def agent_process(grpc_endpoint: str, traces: int) -> None:
    """The child: make every span first (kept in memory), say so, wait for the signal, then export them all with the
    SDK's OTLP/gRPC exporter in the batches its BatchSpanProcessor makes (512 spans), and report."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from tests.support.otel_spans import Recorder

    recorders = {agent: Recorder(**{"service.name": f"{agent}-svc"}) for agent in AGENTS}
    spans = []
    call = 0
    for i in range(traces):
        agent = list(AGENTS)[i % len(AGENTS)]
        rec = recorders[agent]
        with rec.agent(agent, **{"gen_ai.conversation.id": f"conv-{i}"}):
            for _ in range(SPANS_PER_TRACE - 1):
                call += 1
                tool = "shell.exec" if call % OUT_OF_SCOPE_EVERY == 0 else AGENTS[agent]
                with rec.tool(tool, {"query": f"lookup {call}", "page": call % 7}):
                    pass
        spans.extend(rec.finished())
    exporter = OTLPSpanExporter(endpoint=grpc_endpoint, insecure=True, timeout=60)
    print("ready", flush=True)
    sys.stdin.readline()
    for start in range(0, len(spans), 512):
        assert exporter.export(spans[start:start + 512]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    print("exported", flush=True)


def due_findings(traces: int) -> int:
    calls = traces * (SPANS_PER_TRACE - 1)
    return calls // OUT_OF_SCOPE_EVERY


async def rep(bootstrap: str, traces: int, data_dir: Path) -> tuple[float, float]:
    from bench.otlp_throughput import timed_ingest
    from bench.throughput import CountingResponder
    from service.runtime.settings import Settings
    from service.runtime.worker import Runtime
    from tests.support.otel_collector import docs_config, start_collector
    from warden.telemetry import metrics

    suffix = uuid.uuid4().hex[:6]
    topics = {f"topic_{name}": f"bench-{suffix}.{name}" for name in (
        "activity", "findings", "dlq", "control", "revocations", "otlp", "otlp_logs")}
    settings = Settings(kafka_bootstrap=bootstrap, app_id=f"bench-{suffix}", data_dir=data_dir, web_bind="127.0.0.1:0",
                        otlp_encoding="otlp_proto", kafka_session_timeout_s=6, kafka_heartbeat_interval_s=1,
                        kafka_rebalance_timeout_s=3, **topics)
    n_events, due = traces * SPANS_PER_TRACE, due_findings(traces)
    events0 = metrics.total(metrics.EVENTS)
    with timed_ingest(n_events, due) as (marks, checkpoint):
        async with Runtime(settings, responder=CountingResponder(), checkpoint=checkpoint):
            with start_collector(docs_config(), data_dir / "collector", {
                    "KAFKA_BROKERS": bootstrap, "WARDEN_TOPIC_OTLP": topics["topic_otlp"],
                    "WARDEN_TOPIC_OTLP_LOGS": topics["topic_otlp_logs"]}) as collector:
                child = subprocess.Popen(  # the agent, in its own process (its own GIL)
                    [sys.executable, __file__, "--agent", collector.grpc_endpoint, str(traces)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert child.stdin is not None and child.stdout is not None
                assert (await asyncio.to_thread(child.stdout.readline)).strip() == "ready"
                marks["go"] = time.perf_counter()
                child.stdin.write("go\n")
                child.stdin.flush()
                deadline = time.monotonic() + 600
                while "end" not in marks:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not every event judged: {metrics.total(metrics.EVENTS) - events0} of "
                                           f"{n_events}; the Collector's log:\n{collector.log()[-3000:]}")
                    await asyncio.sleep(0.05)
                child.wait(timeout=120)
    return n_events / (marks["end"] - marks["go"]), n_events / (marks["end"] - marks["first"])


def _mmm(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=500, help="traces of 100 spans per rep")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bootstrap = os.environ.get("WARDEN_BENCH_KAFKA_BOOTSTRAP")
    if not bootstrap:
        sys.exit("WARDEN_BENCH_KAFKA_BOOTSTRAP must name an Apache Kafka "
                 "(tests/support/kafka/apache_kafka.sh start DIR): "
                 "the Collector's kafka exporter cannot talk to the embedded Tansu broker")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.reps):
            results.append(await rep(bootstrap, args.traces, Path(tmp) / str(i)))
    e2e, alone = [r[0] for r in results], [r[1] for r in results]
    print(f"{args.traces} traces x {SPANS_PER_TRACE} spans = {args.traces * SPANS_PER_TRACE} events, "
          f"{due_findings(args.traces)} findings due, {args.reps} reps (min / median / max)")
    print(f"e2e: SDK -> Collector -> Kafka -> Warden  events/s {_mmm(e2e, ',.0f')}")
    print(f"w:   Warden alone, same run                events/s {_mmm(alone, ',.0f')}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--agent":
        agent_process(sys.argv[2], int(sys.argv[3]))
    else:
        asyncio.run(main())
