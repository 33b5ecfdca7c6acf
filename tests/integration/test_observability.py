"""Prometheus: exact counter values scraped from a worker's /metrics after a known stream; the Grafana dashboard's
and the alert rules' PromQL parses and reads only metrics Warden defines; promtool checks and tests the rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import aiohttp
import pytest
from prometheus_client import Counter, Gauge, Histogram

from service.runtime.settings import Settings
from service.runtime.worker import Runtime
from tests.support.incident_helpers import eventually
from tests.support.kafka_helpers import event, produce, produce_events, read_topic
from tests.support.observability_checks import ALERTS, alert_exprs, dashboard_exprs, family, names_in
from warden.telemetry import metrics

REQUIRED_PANELS = {  # what the issue asks the dashboard to show, by the metric that shows it
    "ingest rate": "warden_events_total", "findings by rule": "warden_findings_total",
    "open incidents": "warden_incidents_open", "time to notify": "warden_time_to_notify_seconds_bucket",
    "time to contain": "warden_containment_seconds_bucket", "DLQ rate": "warden_invalid_events_total",
    "lag": "warden_consumer_lag",
}


def defined_families() -> set[str]:
    return {m.name + ("_total" if m.type == "counter" else "") for c in vars(metrics).values()
            if isinstance(c, Counter | Gauge | Histogram) for m in c.collect()}


def test_every_dashboard_expression_parses_and_reads_only_warden_metrics() -> None:
    exprs = dashboard_exprs()
    read = set().union(*(names_in(e) for e in exprs))
    assert {family(n) for n in read} <= defined_families()
    for what, metric in REQUIRED_PANELS.items():
        assert metric in read, f"the dashboard has no panel for {what}"


def test_every_alert_expression_parses_and_reads_only_warden_metrics() -> None:
    read = set().union(*(names_in(e) for e in alert_exprs()))
    assert {family(n) for n in read} <= defined_families()


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package for it")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def test_promtool_checks_and_tests_the_alert_rules() -> None:
    promtool = _promtool()
    checked = subprocess.run([promtool, "check", "rules", ALERTS.name], cwd=ALERTS.parent, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0 and "SUCCESS: 6 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=ALERTS.parent, capture_output=True,
                            text=True, check=False)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def _scrape(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        return _samples(await r.text())


@pytest.mark.integration
async def test_exact_counter_values_after_a_known_stream(worker_settings: Settings) -> None:
    """3 valid prompts from agents no workflow owns (one unowned_agent finding each), 1 out-of-scope tool call by a
    listed agent, 2 malformed messages and 1 batch with one bad element: the deltas are exact."""
    async with Runtime(worker_settings) as worker:
        assert worker.web is not None
        s = worker.settings
        before = await _scrape(worker.web.port)
        run = uuid.uuid4().hex[:6]
        strays = [event(f"stray-{run}-{i}", kind="prompt", content={"prompt": "hi"}) for i in range(3)]
        call = event("support-bot-1", tool={"name": "shell.exec", "arguments": {"cmd": "id"}})
        await produce_events(worker.bootstrap, s.topic_activity, [*strays, call])
        batch = f'[{event(f"stray-{run}-9", kind="prompt")!r}, {{"kind": "prompt"}}]'.replace("'", '"')
        await produce(worker.bootstrap, s.topic_activity, [(b"bad", b"{not json"), (b"bad", b"\xff\xfe"),
                                                          (b"batch", batch.encode())])
        await read_topic(worker.bootstrap, s.topic_findings, expect=5)
        await read_topic(worker.bootstrap, s.topic_dlq, expect=3)
        port = worker.web.port

        async def counted() -> dict[str, float] | None:
            """The scrape once the last finding and dead letter are counted (a record can reach its topic just
            before its counter moves); exact below, so a count past the expected one still fails."""
            now = await _scrape(port)
            findings = sum(v - before.get(k, 0.0) for k, v in now.items() if k.startswith("warden_findings_total"))
            invalid = sum(v - before.get(k, 0.0) for k, v in now.items()
                          if k.startswith("warden_invalid_events_total"))
            # the first lag pass may meet no group coordinator yet: wait for one that read the broker
            lag_read = 'warden_consumer_lag{topic="' + s.topic_activity + '"}' in now
            return now if findings >= 5 and invalid >= 3 and lag_read else None

        after: dict[str, float] = await eventually(
            counted, timeout=20, what="the five findings and three dead letters counted, and the lag read")

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('warden_events_total{kind="prompt"}') == 4
    assert delta('warden_events_total{kind="tool_call"}') == 1
    assert delta('warden_invalid_events_total{reason="malformed_json"}') == 1
    assert delta('warden_invalid_events_total{reason="not_utf8"}') == 1
    assert sum(delta(k) for k in after if k.startswith("warden_invalid_events_total")) == 3
    assert delta('warden_findings_total{rule="unowned_agent",severity="high",shadow="false"}') == 4
    assert delta('warden_findings_total{rule="unapproved_tool",severity="medium",shadow="false"}') == 1
    assert delta("warden_detection_seconds_count") == 5
    assert after['warden_consumer_lag{topic="' + s.topic_activity + '"}'] >= 0  # read from the broker
