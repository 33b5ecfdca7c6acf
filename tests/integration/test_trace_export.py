"""Warden's verdicts back into the agent's traces (experimental): findings and containment steps recorded on an
incident (both database backends) are posted as OTLP/HTTP protobuf to the real Collector built from
tests/support/otel/, whose
file exporter writes what it received; the test reads it back. Each record carries the trace and span id of the
agent's span, the `gen_ai.evaluation.result` fields, and no secret or agent text."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from responders.trace_export import SCOPE, TraceExporter, logs_url, trace_of
from service.runtime.settings import Settings
from tests.support.containment_helpers import containment_policy, violation
from tests.support.incident_helpers import FakeClock, running
from tests.support.otel_collector import collector_binary, start_collector
from warden.contract.findings import finding_id

PLANTED = "sk-live0PLANTEDsecret0000000000"
TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
FILE_CONFIG = """receivers:
  otlp:
    protocols:
      http:
        endpoint: ${env:OTLP_HTTP_ENDPOINT}
exporters:
  file:
    path: ${env:VERDICTS_FILE}
    flush_interval: 100ms
service:
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [file]
"""


def _records(path: Path, wanted: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The log records the file exporter wrote (OTLP/JSON lines), once `wanted` have arrived."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        records = [(rl["resource"], sl["scope"], r) for line in lines for rl in json.loads(line)["resourceLogs"]
                   for sl in rl["scopeLogs"] for r in sl["logRecords"]]
        if len(records) >= wanted:
            return [{"resource": _attrs(res.get("attributes", [])), "scope": scope, **r,
                     "attributes": _attrs(r.get("attributes", []))} for res, scope, r in records]
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: {len(records)} of {wanted} records after {timeout}s")
        time.sleep(0.1)


def _attrs(kvs: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: next(iter(kv["value"].values())) for kv in kvs}


async def test_findings_and_containment_steps_reach_the_collector_on_the_agents_span(
        incident_settings: Settings, tmp_path: Path) -> None:
    collector_binary()  # skips without Go (fails under CI) before anything starts
    verdicts = tmp_path / "verdicts.jsonl"
    clock = FakeClock()
    policy = containment_policy([])
    with start_collector(FILE_CONFIG, tmp_path / "collector", {"VERDICTS_FILE": str(verdicts)}) as collector:
        async with running(incident_settings, clock=clock) as responder:
            event_id = f"otel:{TRACE}:{SPAN}"
            finding = violation(policy, name=f"shell.exec token={PLANTED}", arguments={"key": PLANTED},
                                event_id=event_id)
            assert finding.finding_id == finding_id(event_id, "unapproved_tool")
            await responder.store.incidents.record_finding(finding, clock())
            native = violation(policy, agent="iam-agent", name="db.drop", event_id="e-native-1")
            await responder.store.incidents.record_finding(native, clock())  # no trace: nothing to attach it to
            async with responder.store.sessions.begin() as s:
                await responder.store.timeline.log_entry(s, 1, clock(), "containment_step_done", detail={
                    "playbook": "quarantine_agent", "step": 0, "action": "quarantine_agent", "attempts": 1,
                    "token": PLANTED})
            await responder.outbox.loop.stop()
            exporter = TraceExporter(responder.engine, collector.http_url, clock, service="warden-test",
                                     version="9.9", settle_s=0)
            try:
                assert await exporter.export() >= 3
                assert await exporter.export() == 0  # the cursor moved: nothing is sent twice
            finally:
                await exporter.close()
            assert exporter.exported == 2
        records = _records(verdicts, 2)
    assert PLANTED not in verdicts.read_text() and "shell.exec" not in verdicts.read_text()
    assert {(r["traceId"], r["spanId"]) for r in records} == {(TRACE, SPAN)}
    assert {r["scope"]["name"] for r in records} == {SCOPE}
    assert {r["resource"]["service.name"] for r in records} == {"warden-test"}
    by_event = {r["eventName"]: r for r in records}
    verdict = by_event["gen_ai.evaluation.result"]["attributes"]
    assert verdict["gen_ai.evaluation.name"] == "warden.unapproved_tool"
    assert verdict["gen_ai.evaluation.score.label"] == finding.severity.value
    assert verdict["gen_ai.security.external_finding_id"] == finding.finding_id
    assert verdict["gen_ai.security.policy.rule.id"] == "unapproved_tool"
    assert verdict["warden.incident.id"] == "1"  # int64 as a decimal string in OTLP/JSON
    step = by_event["warden.containment.step"]["attributes"]
    assert (step["gen_ai.security.action.type"], step["warden.containment.status"]) == ("quarantine_agent", "done")
    assert step["gen_ai.security.external_finding_id"] == finding.finding_id


def test_the_trace_of_an_event_id_and_the_logs_url() -> None:
    assert trace_of(f"otel:{TRACE}:{SPAN}") == (bytes.fromhex(TRACE), bytes.fromhex(SPAN))
    assert trace_of(f"otel:{TRACE}:call:c2") == (bytes.fromhex(TRACE), b"")  # from the logs signal: the trace only
    assert trace_of(f"otel:{TRACE}:prompt:abcdef0123456789") == (bytes.fromhex(TRACE), b"")
    assert trace_of("e-native-1") is None and trace_of("otel:nothex") is None
    assert logs_url("http://c:4318") == logs_url("http://c:4318/") == "http://c:4318/v1/logs"
    assert logs_url("https://c/otlp/v1/logs") == "https://c/otlp/v1/logs"


@pytest.mark.parametrize(("value", "reason"), [
    ("collector:4318", "http:// or https://"), ("ftp://c:21", "http:// or https://"),
    ("http://user:pw@c:4318", "credentials"), ("http://c:4318?token=x", "no query"),
])
def test_a_bad_export_endpoint_is_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Settings(otlp_export_endpoint=value)
