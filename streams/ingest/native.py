"""The native JSON format (schema v1): one event object or a JSON array of them per Kafka message.

One strict parse (jiter, the parser inside pydantic) with duplicate keys and NaN/Infinity refused, then pydantic on
the Python objects. When a batch fails to parse as a whole, its elements are cut apart by `streams.ingest.split`
and parsed alone, so one hostile element (too deep, duplicate keys, a lone surrogate) costs only itself.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jiter
from pydantic import TypeAdapter, ValidationError

from streams.ingest.base import Decoded, Rejection
from streams.ingest.split import split_array
from warden.contract.events import ActivityEvent

# jiter refuses more than this many nested arrays/objects (a fixed limit of the parser, counted from the value
# being parsed: a single event, or one element of a batch once the batch is cut apart).
MAX_DEPTH = 200
# 1e999 parses as inf: look only when such an exponent occurs. Two searches that each start with a literal letter
# (which the regex engine finds with a fast scan) cost a quarter of one `[eE]` class search over the message.
_OVERFLOW_LOWER, _OVERFLOW_UPPER = re.compile(rb"e[+]?\d{3}"), re.compile(rb"E[+]?\d{3}")
_NON_FINITE_TOKEN = re.compile(rb"(?:^|[:\[,]\s*)-?(?:NaN|Infinity)\b")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# A batch of valid events is validated in one call (the per-element loop runs inside pydantic-core); only a batch
# with an invalid element is validated element by element, to reject just that one with its own reason.
_BATCH = TypeAdapter(list[ActivityEvent])
# RFC 4627 §3: JSON text starts with two ASCII characters, so NULs among its first four bytes mean UTF-16/32.
_UTF16_32 = re.compile(rb"\A(?:\x00|[^\x00]\x00[\s\S]\x00)")


def decode(raw: bytes | None, max_bytes: int) -> Decoded:
    """One Kafka message → events (single object or JSON array) and rejections. Never raises."""
    try:
        return _decode(raw, max_bytes)
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises": anything unforeseen is a rejection
        return Decoded(rejections=[Rejection("malformed_json", f"undecodable ({type(exc).__name__})")])


def _decode(raw: bytes | None, max_bytes: int) -> Decoded:
    if raw is None or not raw.strip():
        return Decoded(rejections=[Rejection("empty_message", "message has no value")])
    if len(raw) > max_bytes:
        return Decoded(rejections=[Rejection("too_large", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")])
    if _UTF16_32.match(raw.lstrip(b" \t\r\n")):
        return Decoded(rejections=[Rejection("not_utf8", "looks like UTF-16 or UTF-32; the contract is UTF-8")])
    try:
        value = _parse(raw)
    except _Bad as bad:
        if raw.lstrip()[:1] == b"[":
            return _decode_elements(raw, bad.rejection)
        return Decoded(rejections=[bad.rejection])
    if isinstance(value, list):
        if not value:
            return Decoded(rejections=[Rejection("empty_batch", "batch array holds no events")])
        try:
            events = _BATCH.validate_python(value)
        except ValidationError:
            out = Decoded()
            for i, item in enumerate(value):
                _validate(item, i, out)
            return out
        return Decoded(events=events, indices=list(range(len(events))))
    out = Decoded()
    _validate(value, None, out)
    return out


class _Bad(Exception):
    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


def _parse(raw: bytes) -> Any:
    """Strict JSON: UTF-8 only, no duplicate keys, no NaN/Infinity (nor numbers that overflow to it), no lone
    surrogate escapes, at most MAX_DEPTH levels. Raises _Bad with the specific reason."""
    if _UTF16_32.match(raw.lstrip(b" \t\r\n")):
        raise _Bad(Rejection("not_utf8", "looks like UTF-16 or UTF-32; the contract is UTF-8"))
    try:
        value = jiter.from_json(raw, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys")
    except ValueError as exc:
        raise _Bad(_classify_parse_error(raw, str(exc))) from None
    if (_OVERFLOW_LOWER.search(raw) or _OVERFLOW_UPPER.search(raw)) and not _finite(value):
        raise _Bad(Rejection("non_finite_number", "a number overflows to infinity"))
    return value


def _classify_parse_error(raw: bytes, msg: str) -> Rejection:
    if "recursion limit" in msg:
        return Rejection("too_deep", f"nested more than {MAX_DEPTH} levels deep ({msg})")
    if "duplicate key" in msg.lower():
        return Rejection("duplicate_key", msg)
    if "surrogate" in msg or ("hex escape" in msg and _SURROGATE_ESCAPE.search(raw)):
        return Rejection("lone_surrogate", msg)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as ude:
        return Rejection("not_utf8", str(ude))
    if _NON_FINITE_TOKEN.search(raw):
        return Rejection("non_finite_number", f"NaN and Infinity are not JSON ({msg})")
    return Rejection("malformed_json", msg)


def _finite(value: Any) -> bool:
    """No float in `value` is inf or nan (iterative: the depth is bounded by the parser, the stack is not used)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                return False
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return True


def _validate(item: Any, index: int | None, out: Decoded) -> None:
    if not isinstance(item, dict):
        detail = "an event must be a JSON object or an array of objects"
        out.rejections.append(Rejection("not_an_object", f"{detail}, not {_json_type(item)}", index))
        return
    try:
        out.add(ActivityEvent.model_validate(item), index)
    except ValidationError as exc:
        r = _classify_errors(exc)
        out.rejections.append(Rejection(r.code, r.detail, index))


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "null")


def _decode_elements(raw: bytes, whole: Rejection) -> Decoded:
    """A batch failed to parse as a whole: cut it into elements and judge each alone, so the good ones still flow."""
    spans = split_array(raw)
    if spans is None:  # not even the array's outline holds: nothing can be trusted
        return Decoded(rejections=[whole])
    if not spans:
        return Decoded(rejections=[Rejection("empty_batch", "batch array holds no events")])
    out = Decoded()
    for i, (start, end) in enumerate(spans):
        try:
            item = _parse(raw[start:end])
        except _Bad as bad:
            out.rejections.append(Rejection(bad.rejection.code, bad.rejection.detail, i))
            continue
        _validate(item, i, out)
    return out


def _classify_errors(exc: ValidationError) -> Rejection:
    """Name the most useful code: unknown kind, missing fields, or wrong types, with every error listed."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in errors)
    types = {(e["type"], tuple(e["loc"])) for e in errors}
    if any(t == "enum" and loc == ("kind",) for t, loc in types):
        return Rejection("unknown_kind", detail)
    if any(t == "missing" for t, _ in types) or any("requires the" in e["msg"] for e in errors):
        return Rejection("missing_field", detail)
    return Rejection("invalid_event", detail)
