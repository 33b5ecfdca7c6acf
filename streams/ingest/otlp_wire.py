"""OTLP trace messages as the Collector's Kafka exporter writes them (`otlp_proto` or `otlp_json`) → flat spans.

Both encodings are read with the `opentelemetry-proto` package's generated `TracesData` (whose wire layout is the
same as `ExportTraceServiceRequest`'s, so either message parses). OTLP/JSON differs from protobuf's canonical JSON
only in its ids (hex, not base64), so JSON is parsed strictly (jiter), its ids turned into bytes, and handed to
protobuf's own `json_format` (which takes int64 as decimal strings and enums as ints, as OTLP/JSON writes them).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jiter
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from streams.ingest.base import Rejection

Encoding = Literal["auto", "otlp_proto", "otlp_json"]
ENCODINGS: tuple[Encoding, ...] = ("auto", "otlp_proto", "otlp_json")
STATUS_ERROR = 2  # Status.StatusCode STATUS_CODE_ERROR
_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_MAX_VALUE_DEPTH = 32  # an attribute nested deeper than this is cut (AnyValue arrays/kvlists nest freely)


@dataclass(frozen=True, slots=True)
class Span:
    """One span with its resource, as Python values: what the GenAI mapping and the agent resolver read."""

    trace_id: str  # lowercase hex, 32 digits
    span_id: str  # lowercase hex, 16 digits
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    status_code: int
    status_message: str
    index: int  # position among the message's spans: the batch index of a dead letter


@dataclass
class Spans:
    spans: list[Span]
    rejections: list[Rejection]


def decode_spans(raw: bytes | None, max_bytes: int, encoding: Encoding = "auto") -> Spans:
    """One Kafka message → its spans and a located reason for whatever cannot be read. Never raises."""
    if raw is None or not raw:
        return Spans([], [Rejection("empty_message", "message has no value")])
    if len(raw) > max_bytes:
        return Spans([], [Rejection("too_large", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")])
    try:
        data = _parse(raw, encoding)
    except _Bad as bad:
        return Spans([], [bad.rejection])
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises": anything unforeseen is a rejection
        return Spans([], [Rejection("malformed_otlp", f"undecodable ({type(exc).__name__})")])
    return _flatten(data)


def looks_like_json(raw: bytes) -> bool:
    """Safe auto-detection: a serialized TracesData starts with field 1 (0x0A) and never with `{`; JSON starts with
    `{` after optional whitespace. A leading `\\n` is ambiguous, so JSON is tried first and protobuf after."""
    head = raw.lstrip(b" \t\r\n")[:1]
    return head == b"{"


class _Bad(Exception):
    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


def _parse(raw: bytes, encoding: Encoding) -> TracesData:
    if encoding == "otlp_json" or (encoding == "auto" and looks_like_json(raw)):
        try:
            return _parse_json(raw)
        except _Bad:
            if encoding == "auto" and raw[:1] == b"\n":  # may be protobuf after all (field 1, then a length)
                return _parse_proto(raw)
            raise
    return _parse_proto(raw)


def _parse_proto(raw: bytes) -> TracesData:
    data = TracesData()
    try:
        data.ParseFromString(raw)
    except DecodeError as exc:
        raise _Bad(Rejection("malformed_protobuf", f"not an OTLP TracesData message ({exc})")) from None
    if not data.resource_spans:
        raise _Bad(Rejection("empty_batch", "the TracesData message holds no resource spans"))
    return data


def _parse_json(raw: bytes) -> TracesData:
    try:
        value = jiter.from_json(raw, allow_inf_nan=False, catch_duplicate_keys=True)
    except ValueError as exc:
        raise _Bad(Rejection("malformed_json", str(exc))) from None
    if not isinstance(value, dict):
        raise _Bad(Rejection("not_an_object", "OTLP/JSON is one TracesData object"))
    resource_spans = value.get("resourceSpans", value.get("resource_spans"))
    if not isinstance(resource_spans, list) or not resource_spans:
        raise _Bad(Rejection("empty_batch", "no resourceSpans in the OTLP/JSON message"))
    try:
        _hex_ids_to_base64(resource_spans)
    except ValueError as exc:  # our own message: which id is not hex (an id is no secret)
        raise _Bad(Rejection("malformed_otlp", f"not OTLP/JSON TracesData ({str(exc)[:300]})")) from None
    try:
        data = TracesData()
        json_format.ParseDict(value, data, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
        raise _Bad(Rejection("malformed_otlp", f"not OTLP/JSON TracesData ({_where(exc)})")) from None
    return data


_FIELD = re.compile(r"Failed to parse (\w+) field")


def _where(exc: Exception) -> str:
    """The field path of a protobuf JSON parse error, never its detail: that detail quotes the offending value (an
    attribute such as a tool result may hold a secret), and the reason is a clear-text DLQ header."""
    path = _FIELD.findall(str(exc))
    return f"invalid value at {'.'.join(path)}" if path else type(exc).__name__


def _hex_ids_to_base64(resource_spans: list[Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON parser expects base64 for bytes fields."""
    for rs in resource_spans:
        for ss in _list(rs, "scopeSpans", "scope_spans"):
            for span in _list(ss, "spans"):
                _fix_ids(span)
                for link in _list(span, "links"):
                    _fix_ids(link)


def _list(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


def _fix_ids(obj: Any) -> None:
    if not isinstance(obj, dict):
        return
    for key in _ID_KEYS:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise ValueError(f"{key} {value[:40]!r} is not hex") from None


def _flatten(data: TracesData) -> Spans:
    out = Spans([], [])
    index = 0
    for rs in data.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                if len(s.trace_id) != 16 or len(s.span_id) != 8:
                    out.rejections.append(Rejection(
                        "invalid_span", f"trace id of {len(s.trace_id)} bytes and span id of {len(s.span_id)} bytes "
                        "(OTLP wants 16 and 8)", index))
                else:
                    out.spans.append(Span(
                        trace_id=binascii.hexlify(s.trace_id).decode(), span_id=binascii.hexlify(s.span_id).decode(),
                        parent_id=binascii.hexlify(s.parent_span_id).decode() if s.parent_span_id else None,
                        name=s.name, start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                        attributes=attributes(s.attributes), resource=resource, status_code=s.status.code,
                        status_message=s.status.message, index=index))
                index += 1
    if index == 0:
        out.rejections.append(Rejection("empty_batch", "the message holds no spans"))
    return out


def attributes(kvs: Any) -> dict[str, Any]:
    """KeyValue list → dict (the last of repeated keys wins, as in the SDK)."""
    return {kv.key: _value(kv.value, 0) for kv in kvs}


def _value(v: AnyValue, depth: int) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x, depth + 1) for x in v.array_value.values] if depth < _MAX_VALUE_DEPTH else None
    if kind == "kvlist_value":
        if depth >= _MAX_VALUE_DEPTH:
            return None
        pairs: list[KeyValue] = list(v.kvlist_value.values)
        return {kv.key: _value(kv.value, depth + 1) for kv in pairs}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def encode_json(data: TracesData) -> bytes:
    """`TracesData` as OTLP/JSON (camelCase, integer enums, int64 as strings, hex ids): what the exporter writes with
    `traces.encoding: otlp_json`. The demo sends its spans both ways."""
    doc = json_format.MessageToDict(data, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(doc, separators=(",", ":")).encode()
