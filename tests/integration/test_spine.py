"""End to end on a real broker: bad input reaches the DLQ with its reason and bytes, findings reach the responder."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from service.runtime.settings import Settings
from service.runtime.worker import Runtime
from tests.support.isolated_worker import wait_for
from tests.support.kafka_helpers import event, has_marker, headers, produce, produce_events, read_topic
from tests.support.metrics import metric_value
from warden.contract.findings import Finding
from warden.telemetry import metrics

pytestmark = pytest.mark.integration

BAD_INPUTS: list[tuple[str, bytes]] = [
    ("malformed_json", b'{"event_id": "broken", '),
    ("invalid_event", json.dumps(event("support-bot-1", kind="prompt", ts=12345)).encode()),
    ("missing_field", json.dumps({"event_id": "m1", "kind": "prompt"}).encode()),
    ("unknown_kind", json.dumps(event("support-bot-1", kind="teleport")).encode()),
    ("not_utf8", b'{"event_id": "\xc3\x28"}'),
    ("too_large", json.dumps(event("support-bot-1", kind="prompt", content={"prompt": "x" * 5_000_000})).encode()),
    ("empty_batch", b"[]"),
]


def end_marker(agent: str) -> dict[str, Any]:
    """An out-of-scope call that always yields one finding: sent behind the events under test with the same key,
    so that once its finding is out, every finding of theirs is out too (one partition, in order)."""
    return event(agent, tool={"name": "warden.test.end_marker"})


async def test_bad_input_goes_to_the_dlq_with_reason_bytes_and_source_and_the_worker_keeps_going(
    worker: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    s = worker.settings
    caplog.set_level(logging.WARNING, logger="warden.alert")
    # One key, so one partition: the dead letters come out in the order sent, and the last poison is the DLQ's
    # end marker (nothing before it is still to come).
    last = b'{"event_id": "the last poison", '
    await produce(worker.bootstrap, s.topic_activity, [(b"bad", raw) for _, raw in BAD_INPUTS] + [(b"bad", last)])
    # After all the poison, a valid out-of-scope call must still be detected and alerted.
    after = event("support-bot-2", tool={"name": "shell.exec", "arguments": {"cmd": "id"}})
    marker = end_marker("support-bot-2")
    await produce_events(worker.bootstrap, s.topic_activity, [after, marker])

    opened = s.sealer().open_bytes  # dead letters are sealed
    dlq = await read_topic(worker.bootstrap, s.topic_dlq, until=lambda rs: any(opened(r.value) == last for r in rs),
                           what="the last poison message")
    assert [headers(r)["warden.reason_code"] for r in dlq] == [code for code, _ in BAD_INPUTS] + ["malformed_json"]
    for record, (code, raw) in zip(dlq, BAD_INPUTS, strict=False):
        h = headers(record)
        assert h["warden.reason"].startswith(code + ": ")
        assert h["warden.sealed"] == "fernet"
        assert s.sealer().open_bytes(record.value) == raw, f"{code}: DLQ must carry the original bytes, sealed"
        assert record.key == b"bad"
        assert h["warden.source_topic"] == s.topic_activity
        assert int(h["warden.source_partition"]) >= 0 and int(h["warden.source_offset"]) >= 0
    assert len({headers(r)["warden.source_offset"] for r in dlq}) == len(dlq)

    findings = await read_topic(worker.bootstrap, s.topic_findings, until=has_marker([marker["event_id"]]))
    record, _ = findings
    finding = Finding.model_validate_json(record.value)
    assert record.key == b"support-bot-2" and finding.event_id == after["event_id"]
    expected = ("unapproved_tool", "support-bot-2", "support-assistant")
    assert (finding.rule, finding.agent_id, finding.workflow) == expected
    assert finding.owners.responder.id == "ai-platform"
    assert worker.holder is not None  # set when the worker started
    assert finding.policy_sha256 == worker.holder.current.sha256

    def alerts() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "warden.alert" and "shell.exec" in r.getMessage()]

    # The console notifier runs from the outbox, shortly after the finding is recorded.
    [alert] = await wait_for(alerts, what="the console alert for the shell.exec finding")
    assert "rule=unapproved_tool" in alert and "responder=ai-platform" in alert
    assert "agent=support-bot-2" in alert and "workflow=support-assistant" in alert


async def test_a_bad_element_of_a_batch_is_dead_lettered_and_its_good_neighbours_are_detected(worker: Runtime) -> None:
    s = worker.settings
    good = event("billing-agent-1", tool={"name": "shell.exec"})
    batch = json.dumps([good, {"event_id": "half"}, event("billing-agent-1", kind="prompt")]).encode()
    marker = end_marker("billing-agent-1")
    poison_marker = b'{"event_id": "end of the dead letters", '
    await produce(worker.bootstrap, s.topic_activity, [
        (b"billing-agent-1", batch), (b"billing-agent-1", json.dumps(marker).encode()),
        (b"billing-agent-1", poison_marker)])
    opened = s.sealer().open_bytes  # dead letters are sealed
    dead, last = await read_topic(worker.bootstrap, s.topic_dlq, what="the poison end marker",
                                  until=lambda rs: any(opened(r.value) == poison_marker for r in rs))
    assert opened(last.value) == poison_marker
    assert headers(dead)["warden.reason_code"] == "missing_field"
    assert headers(dead)["warden.batch_index"] == "1"
    assert worker.settings.sealer().open_bytes(dead.value) == batch
    f, end = await read_topic(worker.bootstrap, s.topic_findings, until=has_marker([marker["event_id"]]))
    finding = Finding.model_validate_json(f.value)
    assert finding.event_id == good["event_id"] and Finding.model_validate_json(end.value).event_id == marker[
        "event_id"]
    assert finding.severity.value == "high"  # medium, raised one level for an agentic workflow


class FlakyResponder:
    """A responder that fails the first `failures` calls for each finding, as a briefly unavailable dependency
    would, and every call for the events in `broken` (those are dead-lettered: end markers for the DLQ)."""

    def __init__(self, failures: int, broken: frozenset[str] = frozenset()) -> None:
        self.failures = failures
        self.broken = broken
        self.calls: Counter[str] = Counter()

    async def start(self) -> None:
        return None

    async def handle(self, finding: Finding) -> None:
        self.calls[finding.event_id] += 1
        if finding.event_id in self.broken or self.calls[finding.event_id] <= self.failures:
            raise ConnectionError("responder backend unavailable")

    async def stop(self) -> None:
        return None


async def _through(settings: Settings, failures: int) -> tuple[dict[str, Any], FlakyResponder, list[ConsumerRecord]]:
    """One out-of-scope call, then an end marker whose finding always fails, both keyed by one agent: the dead
    letters up to the marker's (so nothing of the first is still to come), and the responder's calls."""
    first, marker = event("support-bot-1", tool={"name": "rm"}), event("support-bot-1", tool={"name": "end.marker"})
    responder = FlakyResponder(failures, broken=frozenset({marker["event_id"]}))
    async with Runtime(settings, responder=responder) as rt:
        await produce_events(rt.bootstrap, settings.topic_activity, [first, marker])
        dlq = await read_topic(rt.bootstrap, settings.topic_dlq,
                               until=has_marker([marker["event_id"]], settings.sealer().open_bytes),
                               what="the end marker's dead letter")
    *dead, last = dlq
    assert Finding.model_validate_json(settings.sealer().open_bytes(last.value)).event_id == marker["event_id"]
    assert responder.calls[marker["event_id"]] == 3, "three attempts, then the dead letter"
    return first, responder, dead


async def test_an_exception_in_the_responder_is_retried_not_acked(worker_settings: Settings) -> None:
    retries_before = metric_value(metrics.PROCESSING_RETRIES)
    first, responder, dead = await _through(worker_settings, failures=2)
    assert responder.calls[first["event_id"]] == 3, "failed twice, handled on the third attempt"
    assert dead == [], "a finding handled on a retry is not dead-lettered"
    assert metric_value(metrics.PROCESSING_RETRIES) - retries_before == 2 + 2  # the first's, then the marker's


async def test_a_finding_that_keeps_failing_is_dead_lettered_with_its_source(worker_settings: Settings) -> None:
    first, responder, dlq = await _through(worker_settings, failures=99)
    assert responder.calls[first["event_id"]] == 3
    [dead] = dlq
    h = headers(dead)
    assert h["warden.reason_code"] == "processing_error"
    assert "ConnectionError: responder backend unavailable" in h["warden.reason"]
    assert h["warden.source_topic"] == worker_settings.topic_findings
    opened = Finding.model_validate_json(worker_settings.sealer().open_bytes(dead.value))
    assert opened.rule == "unapproved_tool" and opened.event_id == first["event_id"]
