"""Fuzzing the decoder (hypothesis): events from the schema, hostile bytes and hostile batch elements. For every
message: nothing raises, each element is an event or a rejection with a known specific reason (exactly once), good
neighbours survive a bad element, and whatever is accepted can be detected on and its findings serialised."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.runtime.catalogue import load
from service.runtime.settings import BUNDLED_POLICY
from streams.detectors import DetectorState, detect
from streams.ingest.base import REASON_CODES, Decoded
from streams.ingest.native import decode

LIMIT = 1_048_576
POLICY = load(BUNDLED_POLICY)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])

AGENTS = ["support-bot-1", "support-bot-2", "billing-agent-1", "iam-agent-1", "nobody-knows-me"]
text = st.text(max_size=40)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner,
                                                                                                 max_size=4),
                          max_leaves=20)
PARTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "tool": st.fixed_dictionaries({"name": st.sampled_from(["kb.search", "shell.exec", "billing.refund"])},
                                  optional={"call_id": text, "arguments": st.dictionaries(text, json_value,
                                                                                          max_size=4)}),
    "resource": st.fixed_dictionaries({"type": st.sampled_from(["secret", "dataset"]), "id": st.text(min_size=1)},
                                      optional={"classification": st.sampled_from(["public", "restricted"])}),
    "identity_change": st.fixed_dictionaries({"operation": st.just("grant_role"), "target": st.text(min_size=1)}),
    "approval": st.fixed_dictionaries({"approver": st.just("jordan"),
                                       "decision": st.sampled_from(["approved", "rejected"])}),
}
KIND_PART = {"tool_call": "tool", "secret_access": "resource", "data_access": "resource",
             "identity_change": "identity_change", "approval": "approval", "prompt": None, "completion": None,
             "agent_invoke": None}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid native event of any kind, with the optional parts the schema allows."""
    kind = draw(st.sampled_from(sorted(KIND_PART)))
    ev: dict[str, Any] = {"event_id": draw(st.text(min_size=1, max_size=64)), "kind": kind,
                          "ts": draw(st.sampled_from(["2026-11-21T10:00:00Z", "2026-11-21T10:00:00.5+02:00"])),
                          "agent": {"id": draw(st.sampled_from(AGENTS))}}
    part = KIND_PART[kind]
    if part:
        ev[part] = draw(PARTS[part])
    if draw(st.booleans()):
        ev["content"] = {"prompt": draw(text), "output": draw(text)}
    if draw(st.booleans()):
        ev["credential"] = {"id": "kid-1", "token": draw(st.text(min_size=1, max_size=30))}
    if draw(st.booleans()):
        ev["session_id"] = draw(text)
    ev.update(draw(st.dictionaries(st.sampled_from(["gateway", "vendor", "x"]), json_value, max_size=2)))
    return ev


def _deep(depth: int, opener: str) -> str:
    return (opener * depth) + ("]" * depth if opener == "[" else "1" + "}" * depth)


TRUNCATED = "\x00truncated"  # appended by the strategy to mark a truncated element; stripped before use


@st.composite
def hostile_elements(draw: st.DrawFn) -> str:
    """One element's JSON text, broken in one of the ways an attacker (or a buggy producer) would. Only a
    truncated one breaks the array's outline (it may swallow its neighbours); the others keep it."""
    good = json.dumps(draw(events()))

    def splice(extra: str) -> str:
        return "{" + extra + ", " + good[1:]

    choice = draw(st.sampled_from(["deep", "dup", "nonfinite", "surrogate", "truncated", "garbage", "wrongtype"]))
    if choice == "deep":
        return _deep(draw(st.integers(150, 5000)), draw(st.sampled_from(["[", '{"a":'])))
    if choice == "dup":
        return splice('"kind": ' + json.dumps(draw(text)))
    if choice == "nonfinite":
        return splice('"x": ' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-2E+400"])))
    if choice == "surrogate":
        return splice('"x": "a\\u' + draw(st.sampled_from(["d800", "DBFF", "dc00", "dfff"])) + 'b"')
    if choice == "truncated":
        return good[: draw(st.integers(1, len(good) - 1))] + TRUNCATED
    if choice == "garbage":  # not JSON, but leaves the array's outline alone (broken outlines: the tests below)
        # text a producer can send: UTF-8 has no lone surrogates (escaped ones are the "surrogate" case above)
        return draw(st.text(st.characters(exclude_characters='[]{}",', exclude_categories=["Cs"]), max_size=50))
    return json.dumps(draw(json_value))


def _check(decoded: Decoded, elements: int | None) -> None:
    """Every rejection has a specific known reason; in a batch every element is accounted for exactly once."""
    for r in decoded.rejections:
        assert r.code in REASON_CODES and r.detail, r
    assert len(decoded.indices) == len(decoded.events)
    if elements is not None and decoded.rejections and decoded.rejections[0].index is not None:
        seen = sorted([i for i in decoded.indices if i is not None] + [r.index for r in decoded.rejections
                                                                       if r.index is not None])
        assert seen == list(range(len(seen))), "each element once, by its index"
    state = DetectorState()
    for ev in decoded.events:  # accepted means usable: detection runs, findings and events serialise
        json.loads(ev.model_dump_json())
        for finding in detect(ev, POLICY, state):
            json.loads(finding.model_dump_json())


@FUZZ
@given(events())
def test_every_valid_event_is_accepted_alone_and_in_a_batch(ev: dict[str, Any]) -> None:
    single = decode(json.dumps(ev).encode(), LIMIT)
    assert single.rejections == [] and len(single.events) == 1
    _check(single, None)
    batch = decode(json.dumps([ev, ev]).encode(), LIMIT)
    assert batch.rejections == [] and batch.indices == [0, 1]


@FUZZ
@given(st.lists(events(), min_size=1, max_size=4), st.lists(hostile_elements(), min_size=1, max_size=3),
       st.randoms(use_true_random=False))
def test_hostile_elements_cost_only_themselves(good: list[dict[str, Any]], bad: list[str], rnd: Any) -> None:
    truncated = any(b.endswith(TRUNCATED) for b in bad)
    elements = [json.dumps(e) for e in good] + [b.removesuffix(TRUNCATED) for b in bad]
    rnd.shuffle(elements)
    raw = ("[" + ", ".join(elements) + "]").encode()
    decoded = decode(raw, LIMIT)
    _check(decoded, len(elements))
    if truncated:  # boundaries are ambiguous: only "never raises, known reasons" holds
        return
    assert all(r.index is not None for r in decoded.rejections)
    positions = decoded.indices + [r.index for r in decoded.rejections]  # each element's, once
    assert sorted(p for p in positions if p is not None) == list(range(len(positions))) == list(range(len(elements)))
    assert {ev.event_id for ev in decoded.events} >= {e["event_id"] for e in good}, "a good neighbour was lost"


@FUZZ
@given(hostile_elements())
def test_a_hostile_event_alone_is_rejected_the_same_as_in_a_batch(bad: str) -> None:
    bad = bad.removesuffix(TRUNCATED)
    single = decode(bad.encode(), LIMIT)
    _check(single, None)
    batch = decode(("[" + bad + "]").encode(), LIMIT)
    _check(batch, 1)
    alone = single.rejections and batch.rejections and batch.rejections[0].index == 0
    if alone and not bad.lstrip().startswith("["):  # (an array alone is a batch of its own elements)
        assert single.rejections[0].code == batch.rejections[0].code


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check(decode(raw, LIMIT), None)


@FUZZ
@given(st.lists(events(), min_size=1, max_size=3), st.sampled_from(["utf-16-le", "utf-16-be", "utf-16",
                                                                    "utf-32", "utf-32-le"]), st.booleans())
def test_utf16_and_utf32_are_not_utf8_whatever_the_shape(evs: list[dict[str, Any]], encoding: str,
                                                         as_batch: bool) -> None:
    raw = json.dumps(evs if as_batch else evs[0]).encode(encoding)
    out = decode(raw, LIMIT)
    assert out.events == [] and [r.code for r in out.rejections] == ["not_utf8"]


@FUZZ
@given(events(), st.integers(0, 2000))
def test_bytes_cut_anywhere_never_raise(ev: dict[str, Any], cut: int) -> None:
    raw = json.dumps([ev, ev]).encode()
    _check(decode(raw[: cut % len(raw)], LIMIT), None)
