"""Decoding raw activity bytes: every kind of bad input gets its own reason; good events pass untouched."""

from __future__ import annotations

import json

import pytest

from streams.ingest.native import decode
from tests.kafka_helpers import event

LIMIT = 1_048_576


def _raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_a_valid_event_decodes_and_keeps_unknown_fields_in_attributes() -> None:
    e = event("a1", tool={"name": "kb.search"}, vendor_field={"x": 1})
    out = decode(_raw(e), LIMIT)
    assert out.rejections == []
    [ev] = out.events
    assert ev.event_id == e["event_id"] and ev.tool is not None and ev.tool.name == "kb.search"
    assert ev.attributes == {"vendor_field": {"x": 1}}


def test_a_batch_message_yields_every_event() -> None:
    batch = [event(f"a{i}", kind="prompt") for i in range(5)]
    out = decode(_raw(batch), LIMIT)
    assert [e.agent.id for e in out.events] == [f"a{i}" for i in range(5)]
    assert out.rejections == []


def test_a_batch_element_that_is_not_an_object_is_rejected_as_not_an_object() -> None:
    batch = [5, event("a1", kind="prompt"), "text", None, [event("a2", kind="prompt")]]
    out = decode(_raw(batch), LIMIT)
    assert [e.agent.id for e in out.events] == ["a1"]
    assert [(r.code, r.index) for r in out.rejections] == [
        ("not_an_object", 0), ("not_an_object", 2), ("not_an_object", 3), ("not_an_object", 4)]


def test_one_bad_element_in_a_batch_is_rejected_alone_with_its_index() -> None:
    batch = [event("a1", kind="prompt"), {"event_id": "x"}, event("a2", kind="prompt")]
    out = decode(_raw(batch), LIMIT)
    assert [e.agent.id for e in out.events] == ["a1", "a2"]
    [r] = out.rejections
    assert (r.code, r.index) == ("missing_field", 1)
    assert "ts" in r.detail and "agent" in r.detail


@pytest.mark.parametrize(
    ("raw", "code", "detail"),
    [
        (b'{"event_id": "x", ', "malformed_json", "EOF"),
        (b'{"event_id": "\xff\xfe"}', "not_utf8", "utf-8"),
        (b"[]", "empty_batch", "no events"),
        (b"", "empty_message", "no value"),
        (b"42", "not_an_object", "JSON object"),
        (_raw(event("a", kind="teleport")), "unknown_kind", "kind"),
        (_raw({"ts": "2026-11-21T10:00:00Z", "kind": "prompt"}), "missing_field", "event_id"),
        (_raw(event("a", kind="tool_call")), "missing_field", "requires the 'tool' field"),
        (_raw(event("a", kind="prompt", ts="yesterday")), "invalid_event", "ts"),
        (_raw(event("a", kind="prompt", ts=1795300000)), "invalid_event", "RFC 3339"),
        (_raw(event("a", kind="prompt", ts="2026-11-21T10:00:00")), "invalid_event", "timezone"),
        (_raw({**event("a", kind="prompt"), "agent": {"id": 5}}), "invalid_event", "agent.id"),
    ],
)
def test_bad_input_gets_a_specific_reason(raw: bytes, code: str, detail: str) -> None:
    out = decode(raw, LIMIT)
    assert out.events == []
    [r] = out.rejections
    assert r.code == code
    assert detail in r.detail
    assert r.reason.startswith(code + ": ")


def test_a_message_over_the_limit_is_rejected_before_parsing() -> None:
    raw = _raw(event("a", kind="prompt", content={"prompt": "x" * 5_000_000}))
    out = decode(raw, LIMIT)
    [r] = out.rejections
    assert r.code == "too_large" and str(len(raw)) in r.detail


def test_the_credential_token_never_appears_when_an_event_is_rendered() -> None:
    e = event("a", kind="secret_access", resource={"type": "secret", "id": "vault://x"},
              credential={"id": "kid-1", "token": "sk-supersecretvalue123456"})
    [ev] = decode(_raw(e), LIMIT).events
    assert ev.credential is not None and ev.credential.token is not None
    assert ev.credential.token.get_secret_value() == "sk-supersecretvalue123456"
    for rendered in (ev.model_dump_json(), repr(ev), str(ev.model_dump())):
        assert "supersecret" not in rendered
