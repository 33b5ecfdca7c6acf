"""End to end on a real broker: bad input reaches the DLQ with its reason and bytes, findings reach the responder."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.kafka_helpers import event, headers, produce, produce_events, read_topic
from warden.contract import metrics
from warden.contract.findings import Finding
from warden.runtime.settings import Settings
from warden.runtime.worker import Runtime

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


async def test_bad_input_goes_to_the_dlq_with_reason_bytes_and_source_and_the_worker_keeps_going(
    worker: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    s = worker.settings
    caplog.set_level(logging.WARNING, logger="warden.alert")
    keys = [f"bad-{code}".encode() for code, _ in BAD_INPUTS]
    await produce(worker.bootstrap, s.topic_activity, zip(keys, (raw for _, raw in BAD_INPUTS), strict=True))
    # After all the poison, a valid out-of-scope call must still be detected and alerted.
    after = event("support-bot-2", tool={"name": "shell.exec", "arguments": {"cmd": "id"}})
    await produce_events(worker.bootstrap, s.topic_activity, [after])

    dlq = await read_topic(worker.bootstrap, s.topic_dlq, expect=len(BAD_INPUTS))
    by_key = {r.key: r for r in dlq}
    assert len(dlq) == len(BAD_INPUTS)
    for key, (code, raw) in zip(keys, BAD_INPUTS, strict=True):
        record = by_key[key]
        h = headers(record)
        assert h["warden.reason_code"] == code
        assert h["warden.reason"].startswith(code + ": ")
        assert h["warden.sealed"] == "fernet"
        assert s.sealer().open_bytes(record.value) == raw, f"{code}: DLQ must carry the original bytes, sealed"
        assert h["warden.source_topic"] == s.topic_activity
        assert int(h["warden.source_partition"]) >= 0 and int(h["warden.source_offset"]) >= 0

    findings = await read_topic(worker.bootstrap, s.topic_findings, expect=1, settle=1.0)
    [record] = findings
    finding = Finding.model_validate_json(record.value)
    assert record.key == b"support-bot-2"
    expected = ("unapproved_tool", "support-bot-2", "support-assistant")
    assert (finding.rule, finding.agent_id, finding.workflow) == expected
    assert finding.owners.responder.id == "ai-platform"
    assert finding.policy_sha256 == worker.holder.current.sha256

    def alerts() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "warden.alert" and "shell.exec" in r.getMessage()]

    for _ in range(100):  # the console notifier runs from the outbox, shortly after the finding is recorded
        if alerts():
            break
        await asyncio.sleep(0.1)
    [alert] = alerts()
    assert "rule=unapproved_tool" in alert and "responder=ai-platform" in alert
    assert "agent=support-bot-2" in alert and "workflow=support-assistant" in alert


async def test_a_bad_element_of_a_batch_is_dead_lettered_and_its_good_neighbours_are_detected(worker: Runtime) -> None:
    s = worker.settings
    good = event("billing-agent-1", tool={"name": "shell.exec"})
    batch = json.dumps([good, {"event_id": "half"}, event("billing-agent-1", kind="prompt")]).encode()
    await produce(worker.bootstrap, s.topic_activity, [(b"billing-agent-1", batch)])
    [dead] = await read_topic(worker.bootstrap, s.topic_dlq, expect=1, settle=1.0)
    assert headers(dead)["warden.reason_code"] == "missing_field"
    assert headers(dead)["warden.batch_index"] == "1"
    assert worker.settings.sealer().open_bytes(dead.value) == batch
    [f] = await read_topic(worker.bootstrap, s.topic_findings, expect=1, settle=1.0)
    finding = Finding.model_validate_json(f.value)
    assert finding.event_id == good["event_id"]
    assert finding.severity.value == "high"  # medium, raised one level for an agentic workflow


class FlakyResponder:
    """A responder that fails its first `failures` calls, as a briefly unavailable dependency would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def start(self) -> None:
        return None

    async def handle(self, finding: Finding) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("responder backend unavailable")

    async def stop(self) -> None:
        return None


async def _one_finding_through(settings: Settings, responder: FlakyResponder) -> None:
    async with Runtime(settings, responder=responder) as rt:
        await produce_events(rt.bootstrap, settings.topic_activity, [event("support-bot-1", tool={"name": "rm"})])
        for _ in range(300):
            if responder.calls >= min(responder.failures + 1, 3):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)


async def test_an_exception_in_the_responder_is_retried_not_acked(worker_settings: Settings) -> None:
    retries_before = metrics.PROCESSING_RETRIES._value.get()
    responder = FlakyResponder(failures=2)
    await _one_finding_through(worker_settings, responder)
    assert responder.calls == 3
    assert metrics.PROCESSING_RETRIES._value.get() - retries_before == 2
    dlq = await read_topic(worker_settings.kafka_bootstrap or "", worker_settings.topic_dlq, expect=1, timeout=2)
    assert dlq == []


async def test_a_finding_that_keeps_failing_is_dead_lettered_with_its_source(worker_settings: Settings) -> None:
    responder = FlakyResponder(failures=99)
    await _one_finding_through(worker_settings, responder)
    assert responder.calls == 3
    [dead] = await read_topic(worker_settings.kafka_bootstrap or "", worker_settings.topic_dlq, expect=1)
    h = headers(dead)
    assert h["warden.reason_code"] == "processing_error"
    assert "ConnectionError: responder backend unavailable" in h["warden.reason"]
    assert h["warden.source_topic"] == worker_settings.topic_findings
    assert Finding.model_validate_json(worker_settings.sealer().open_bytes(dead.value)).rule == "unapproved_tool"
