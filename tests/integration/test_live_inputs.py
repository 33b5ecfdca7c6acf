"""A live input format is its module plus one line in `streams.ingest.INPUTS`: registered here, a throwaway format
gets its setting, its topic (created with Warden's others, with their size limit), its handler in the worker and is
judged live on the broker, with nothing else edited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from service.runtime.inputs import NativeInput
from service.runtime.settings import Settings, settings_model
from service.runtime.topics import topic_configs, topic_names
from service.runtime.worker import Runtime
from streams.ingest import INPUTS, LiveInput, native
from streams.ingest.base import Decoded
from tests.support.isolated_worker import RecordingResponder, isolated_settings, wait_for

pytestmark = pytest.mark.integration


def decode_pipes(raw: bytes | None, max_bytes: int) -> Decoded:
    """The throwaway format's module: one event per message as `agent|kind|event_id|ts`."""
    agent, kind, event_id, ts = (raw or b"").decode().split("|")
    native_json = json.dumps({"event_id": event_id, "ts": ts, "kind": kind, "agent": {"id": agent}}).encode()
    return native.decode(native_json, max_bytes)


# ...and its one registry line
PIPES = LiveInput("warden.pipes", "Pipe-separated events (a test's own format).", replay=lambda r: decode_pipes)


async def test_a_registered_format_is_a_setting_a_topic_and_an_input_judged_live(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = settings_model({**INPUTS, "pipes": PIPES})
    base = isolated_settings(kafka_bootstrap, tmp_path)
    topic = f"{base.app_id}.pipes"
    monkeypatch.setenv("WARDEN_TOPIC_PIPES", topic)  # its setting, read like any other
    s = model(**dict(base))
    assert "topic_pipes" not in Settings.model_fields, "the product's own settings are untouched"
    assert model.model_fields["topic_pipes"].default == "warden.pipes"
    assert s.input_topics() == {**base.input_topics(), "pipes": topic}
    assert topic in topic_names(s)
    assert topic_configs(s)[topic] == topic_configs(s)[base.input_topic("activity")]  # the inputs' size limit

    agent = f"stray-{s.app_id}"
    responder = RecordingResponder()
    async with Runtime(s, responder=responder) as runtime:
        assert runtime.ingest is not None
        assert topic in runtime.ingest.topics
        assert isinstance(runtime.ingest.judge.inputs[topic], NativeInput)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, f"{agent}|prompt|pipes-1|2026-11-21T10:00:00Z".encode(),
                                         key=agent.encode())
        finally:
            await producer.stop()
        [finding] = await wait_for(lambda: [f for f in responder.findings if f.event_id == "pipes-1"],
                                   what="the finding of the event sent on the throwaway format's topic")
    assert finding.agent_id == agent
    assert finding.rule == "unowned_agent"
