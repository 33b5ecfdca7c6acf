"""Decoding raw activity bytes: every kind of bad input gets its own reason; good events pass untouched."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import pytest

from streams.ingest.base import Rejection
from streams.ingest.native import decode
from streams.ingest.split import split_array
from tests.support.kafka_helpers import event

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


# -- hostile input: one named regression test per class (issue 10); tests/unit/streams/test_hostile_input.py
# fuzzes them

GOOD = json.dumps(event("a1", kind="prompt"))


def _with(extra: str) -> str:
    """The good event with raw JSON text spliced in after its opening brace."""
    return "{" + extra + ", " + GOOD[1:]


def _batch_with(bad: str) -> bytes:
    return ("[" + GOOD + ", " + bad + ", " + GOOD + "]").encode()


@pytest.mark.parametrize(("bad", "code"), [
    ("[" * 5000 + "]" * 5000, "too_deep"),  # a ~10 KB element: jiter stops at 200 levels, the stack is never used
    (_with('"x": ' + "[" * 300 + "]" * 300), "too_deep"),  # 200-999 levels: rejected in a batch as when alone
    (_with('"x": ' + '{"a":' * 300 + "1" + "}" * 300), "too_deep"),
    (_with('"kind": "bogus"'), "duplicate_key"),  # "kind":"bogus","kind":"prompt" no longer keeps the last
    (_with('"x": NaN'), "non_finite_number"),
    (_with('"x": -Infinity'), "non_finite_number"),
    (_with('"x": 1e999'), "non_finite_number"),  # valid JSON text, but it overflows to infinity
    (_with('"x": "\\ud800"'), "lone_surrogate"),  # would fail later, when a finding is serialised
    (_with('"x": "a\\udc00b"'), "lone_surrogate"),
    ('{"event_id": tru}', "malformed_json"),  # broken inside, the array's outline intact
    ("42", "not_an_object"),
])
def test_a_hostile_element_is_rejected_alone_and_its_neighbours_are_decoded(bad: str, code: str) -> None:
    single = decode(bad.encode(), LIMIT)
    assert single.events == [] and [r.code for r in single.rejections] == [code]
    batch = decode(_batch_with(bad), LIMIT)
    assert [r.code for r in batch.rejections] == [code]
    assert batch.rejections[0].index == 1
    assert len(batch.events) == 2 and batch.indices == [0, 2]


def test_a_batch_too_deep_as_a_whole_is_too_deep_at_its_element() -> None:
    out = decode(("[" * 20_000 + "]" * 20_000).encode(), LIMIT)
    assert [(r.code, r.index) for r in out.rejections] == [("too_deep", 0)]


def test_a_valid_surrogate_pair_is_kept() -> None:
    [ev] = decode(_with('"x": "\\ud83d\\ude00"').encode(), LIMIT).events
    assert ev.attributes["x"] == "😀"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32"])
def test_utf16_and_utf32_are_not_utf8_in_a_single_event_and_a_batch_alike(encoding: str) -> None:
    for text in (GOOD, "[" + GOOD + "]"):
        out = decode(text.encode(encoding), LIMIT)
        assert out.events == [] and [r.code for r in out.rejections] == ["not_utf8"], (encoding, text[:1])


def test_a_utf8_byte_order_mark_is_malformed_json_in_a_single_event_and_a_batch_alike() -> None:
    for text in (GOOD, "[" + GOOD + "]"):
        out = decode(("\ufeff" + text).encode(), LIMIT)
        assert [r.code for r in out.rejections] == ["malformed_json"]


def test_invalid_utf8_inside_one_element_costs_only_that_element() -> None:
    raw = b"[" + GOOD.encode() + b', {"event_id": "\xff"}, ' + GOOD.encode() + b"]"
    out = decode(raw, LIMIT)
    assert [(r.code, r.index) for r in out.rejections] == [("not_utf8", 1)] and out.indices == [0, 2]


def test_an_array_whose_outline_is_broken_is_rejected_whole() -> None:
    out = decode(("[" + GOOD + ', "unterminated').encode(), LIMIT)
    assert [(r.code, r.index) for r in out.rejections] == [("malformed_json", None)]


def test_a_message_of_exactly_the_limit_is_decoded() -> None:
    raw = _raw(event("a", kind="prompt"))
    assert [e.agent.id for e in decode(raw, len(raw)).events] == ["a"]
    assert [r.code for r in decode(raw, len(raw) - 1).rejections] == ["too_large"]


def test_a_large_finite_number_is_kept() -> None:
    """Only a number that overflows to infinity is refused; a three-digit exponent alone is fine."""
    [ev] = decode(_with('"x": 1e300').encode(), LIMIT).events
    assert ev.attributes["x"] == 1e300


def test_a_rejected_non_object_names_what_it_was() -> None:
    out = decode(_raw([5, "text", None, [], True]), LIMIT)
    assert [r.detail.rsplit(", not ", 1)[1] for r in out.rejections] == [
        "a number", "a string", "null", "an array", "a boolean"]


def test_a_batch_holding_only_what_json_does_not_call_whitespace_is_an_empty_batch() -> None:
    out = decode(b"[\x0c]", LIMIT)  # a form feed: whitespace to Python, not to JSON, so the whole fails to parse
    assert [(r.code, r.index) for r in out.rejections] == [("empty_batch", None)]


def test_a_value_that_is_not_bytes_is_rejected_not_raised() -> None:
    out = decode("{}", LIMIT)  # type: ignore[arg-type]  # the contract says bytes; decode still never raises
    assert [(r.code, r.detail) for r in out.rejections] == [("malformed_json", "undecodable (TypeError)")]


def test_each_event_keeps_its_position_in_the_batch() -> None:
    out = decode(_batch_with("42"), LIMIT)
    assert [out.index_of(p) for p in range(3)] == [0, 2, None]  # past the last event: no position


def test_rejections_are_values() -> None:
    """Equal rejections are one (a set of reasons dedups them), and none can be changed once made."""
    a, b = Rejection("too_large", "x", 1), Rejection("too_large", "x", 1)
    assert a == b and len({a, b}) == 1
    with pytest.raises(FrozenInstanceError):
        a.code = "other"  # type: ignore[misc]


# -- cutting a batch into its elements without parsing them (streams/ingest/split.py) ----------------------------

@pytest.mark.parametrize(("raw", "elements"), [
    (b'[1, "a,]", {"x": [2, 3]}, [[4]]]', [b"1", b' "a,]"', b' {"x": [2, 3]}', b" [[4]]"]),
    (b"  [1,2]", [b"1", b"2"]),
    (b'[{"a": "[["}, 2]', [b'{"a": "[["}', b" 2"]),  # brackets inside strings nest nothing
    (b'[{"a": "{"}, 2]', [b'{"a": "{"}', b" 2"]),
    (b'[{"a": "x\\"]"}, 2]', [b'{"a": "x\\"]"}', b" 2"]),  # an escaped quote does not end the string
    (b'[[1], "x"]', [b"[1]", b' "x"']),  # back at the top level in the middle of the array
    (b"[[[1], 5], 2]", [b"[[1], 5]", b" 2"]),  # a comma inside a nested element is not a boundary
    (b"[[[1][2]], 3]", [b"[[1][2]]", b" 3"]),  # a broken element keeps its outline: it is cut out whole
    (b"[1,,2]", [b"1", b"", b"2"]),
    (b"[ ]", []),
])
def test_a_batch_is_cut_at_its_top_level_commas(raw: bytes, elements: list[bytes]) -> None:
    spans = split_array(raw)
    assert spans is not None and [raw[start:end] for start, end in spans] == elements


@pytest.mark.parametrize("raw", [b'[1, "abc]', b"[1] x", b"[1, 2", b"{}"])
def test_a_batch_whose_outline_is_broken_cannot_be_cut(raw: bytes) -> None:
    assert split_array(raw) is None


def test_a_valid_surrogate_pair_does_not_make_another_error_a_lone_surrogate() -> None:
    [r] = decode(b'{"x": "\\ud83d\\ude00", ', LIMIT).rejections
    assert r.code == "malformed_json"


def test_nan_and_infinity_tokens_are_refused_by_the_parser_itself() -> None:
    """Not left to the overflow check, which looks only when a three-digit exponent occurs in the message."""
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        [r] = decode(b'{"x": ' + token + b"}", LIMIT).rejections
        assert (r.code, r.detail.split(" (")[0]) == ("non_finite_number", "NaN and Infinity are not JSON"), token
