"""The native JSON format (schema v1): one event object or a JSON array of them per Kafka message."""

from __future__ import annotations

import json

from pydantic import TypeAdapter, ValidationError

from streams.ingest.base import Decoded, Rejection
from warden.contract.events import ActivityEvent

_BATCH = TypeAdapter(list[ActivityEvent])


def decode(raw: bytes | None, max_bytes: int) -> Decoded:
    """One Kafka message → events (single object or JSON array) and rejections. Never raises."""
    if raw is None or not raw.strip():
        return Decoded(rejections=[Rejection("empty_message", "message has no value")])
    if len(raw) > max_bytes:
        return Decoded(rejections=[Rejection("too_large", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")])
    if raw.lstrip()[:1] == b"[":
        try:
            events = _BATCH.validate_json(raw)
        except ValidationError:
            return _decode_batch_slowly(raw)
        if not events:
            return Decoded(rejections=[Rejection("empty_batch", "batch array holds no events")])
        return Decoded(events=events)
    try:
        return Decoded(events=[ActivityEvent.model_validate_json(raw)])
    except ValidationError as exc:
        return Decoded(rejections=[_classify(raw, exc)])


def _decode_batch_slowly(raw: bytes) -> Decoded:
    """A batch failed as a whole: find which elements are bad so the good ones still flow."""
    try:
        items = json.loads(raw)
    except UnicodeDecodeError as exc:
        return Decoded(rejections=[Rejection("not_utf8", str(exc))])
    except ValueError as exc:
        return Decoded(rejections=[Rejection("malformed_json", str(exc))])
    if not items:
        return Decoded(rejections=[Rejection("empty_batch", "batch array holds no events")])
    out = Decoded()
    for i, item in enumerate(items):
        try:
            out.events.append(ActivityEvent.model_validate(item))
        except ValidationError as exc:
            r = _classify_errors(exc) if isinstance(item, dict) else Rejection("not_an_object", type(item).__name__)
            out.rejections.append(Rejection(r.code, r.detail, index=i))
    return out


def _classify(raw: bytes, exc: ValidationError) -> Rejection:
    first = exc.errors()[0]
    if first["type"] in ("json_invalid", "json_type"):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as ude:
            return Rejection("not_utf8", str(ude))
        return Rejection("malformed_json", first["msg"])
    if first["type"] == "model_type":
        return Rejection("not_an_object", "an event must be a JSON object or an array of objects")
    return _classify_errors(exc)


def _classify_errors(exc: ValidationError) -> Rejection:
    """Name the most useful code: unknown kind, missing fields, or wrong types, with every error listed."""
    errors = exc.errors(include_url=False, include_input=False)
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in errors)
    types = {(e["type"], tuple(e["loc"])) for e in errors}
    if any(t == "enum" and loc == ("kind",) for t, loc in types):
        return Rejection("unknown_kind", detail)
    if any(t == "missing" for t, _ in types) or any("requires the" in e["msg"] for e in errors):
        return Rejection("missing_field", detail)
    return Rejection("invalid_event", detail)
