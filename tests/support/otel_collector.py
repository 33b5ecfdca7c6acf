"""The real OpenTelemetry Collector for the integration tests: the minimal distribution of tests/support/otel/ (built
once and cached by tests/support/otel/build_collector.sh), started on free loopback ports with a configuration, stopped
at the end.

`docs_config()` is the YAML block of docs/otel.md that users copy; the tests run exactly that text and only set its
environment variables. Without Go the Collector tests skip and say so; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from tests.support.otel_spans import Recorder

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "support" / "otel" / "build_collector.sh"
DOCS = REPO / "docs" / "otel.md"
NO_GO = 3  # build_collector.sh's exit code when there is no Go toolchain
READY = "Everything is ready. Begin running and processing data."
_binary: Path | None = None


def collector_binary() -> Path:
    """The built Collector (cached after the first build of this source). Skips without Go, fails under CI."""
    global _binary  # noqa: PLW0603 - one build per test process
    if _binary is not None:
        return _binary
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode == NO_GO:
        if os.environ.get("CI"):
            pytest.fail("Go is missing: .ci/run builds the Collector of tests/support/otel/ with it ("
                        + done.stderr.strip() + ")")
        pytest.skip("the Collector tests need Go to build tests/support/otel/collector (" + done.stderr.strip() + ")")
    if done.returncode != 0:
        pytest.fail(f"tests/support/otel/build_collector.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    _binary = Path(done.stdout.strip().splitlines()[-1])
    return _binary


def docs_config() -> str:
    """The Collector configuration shown in docs/otel.md (the YAML block after the `tested:` marker)."""
    marker = r"<!-- tested: tests/support/otel_collector\.py docs_config\(\) -->"
    m = re.search(marker + r"\n```yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert m, "docs/otel.md lost its tested Collector configuration block"
    return m.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Collector:
    """One Collector process: its OTLP endpoints, its log, and stop()."""

    process: subprocess.Popen[bytes]
    grpc_endpoint: str  # host:port
    http_endpoint: str  # host:port
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://{self.http_endpoint}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_collector(config: str, workdir: Path, env: Mapping[str, str] | None = None,
                    timeout: float = 60.0) -> Collector:
    """Start the Collector with `config` (YAML text, `${env:…}` placeholders filled from `env`) on free ports
    (OTLP_GRPC_ENDPOINT and OTLP_HTTP_ENDPOINT are set here) and wait until it says it is ready. Its own metrics
    endpoint is turned off, so parallel tests never fight over port 8888."""
    binary = collector_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "collector.yaml"
    config_path.write_text(config)
    quiet = workdir / "telemetry.yaml"  # merged over the first: the Collector's own metrics server stays off
    quiet.write_text("service:\n  telemetry:\n    metrics:\n      level: none\n")
    grpc, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    full_env = {"PATH": os.environ.get("PATH", ""), "OTLP_GRPC_ENDPOINT": grpc, "OTLP_HTTP_ENDPOINT": http,
                **(env or {})}
    log_path = workdir / "collector.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "--config", f"file:{config_path}", "--config", f"file:{quiet}"],
            stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=workdir)
    collector = Collector(process, grpc, http, log_path, full_env)
    deadline = time.monotonic() + timeout
    while READY not in collector.log():
        if process.poll() is not None:
            raise AssertionError(f"the Collector exited ({process.returncode}) during start-up:\n{collector.log()}")
        if time.monotonic() > deadline:
            collector.stop()
            raise AssertionError(f"the Collector was not ready within {timeout}s:\n{collector.log()}")
        time.sleep(0.05)
    return collector


def span_exporter(collector: Collector, protocol: str) -> SpanExporter:
    """The SDK's own OTLP span exporter, over gRPC or HTTP/protobuf, pointed at the Collector."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        return GrpcSpans(endpoint=collector.grpc_endpoint, insecure=True, timeout=30)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    return HttpSpans(endpoint=f"{collector.http_url}/v1/traces", timeout=30)


def log_exporter(collector: Collector, protocol: str) -> LogRecordExporter:
    """The SDK's own OTLP log exporter, over gRPC or HTTP/protobuf, pointed at the Collector."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

        return GrpcLogs(endpoint=collector.grpc_endpoint, insecure=True, timeout=30)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

    return HttpLogs(endpoint=f"{collector.http_url}/v1/logs", timeout=30)


class SdkAgent(Recorder):
    """A traced agent process: the SDK's batch processors export its spans and GenAI events (log records) over OTLP
    to the Collector when `flush` is called (and the Recorder's in-memory copies give the tests their ids)."""

    def __init__(self, collector: Collector, protocol: str, **resource: Any) -> None:
        super().__init__(**resource)
        self.protocol = protocol
        self.provider.add_span_processor(BatchSpanProcessor(span_exporter(collector, protocol),
                                                            schedule_delay_millis=3_600_000))
        self.log_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter(collector, protocol),
                                                                           schedule_delay_millis=3_600_000))

    def flush(self) -> None:
        """Export every ended span and emitted event now (blocking: call it in a thread from a test's event loop)."""
        assert self.log_provider.force_flush(30_000), f"the SDK's OTLP/{self.protocol} log export did not finish"
        assert self.provider.force_flush(30_000), f"the SDK's OTLP/{self.protocol} export did not finish"

    def shutdown(self) -> None:
        self.provider.shutdown()
        self.log_provider.shutdown()
