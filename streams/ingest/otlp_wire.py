"""OTLP trace and log messages as the Collector's Kafka exporter writes them (`otlp_proto` or `otlp_json`) → flat
spans and log records.

Both encodings are read with the `opentelemetry-proto` package's generated `TracesData` and `LogsData` (whose wire
layouts are the same as `ExportTraceServiceRequest`'s and `ExportLogsServiceRequest`'s, so either message parses).
OTLP/JSON differs from protobuf's canonical JSON only in its ids (hex, not base64), so JSON is parsed strictly
(jiter), its ids turned into bytes, and handed to protobuf's own `json_format` (which takes int64 as decimal strings
and enums as ints, as OTLP/JSON writes them).
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
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
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


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One log record with its resource and scope, as Python values: a GenAI event (`event_name`) joined to its span
    by `trace_id`/`span_id` when it was emitted inside one."""

    trace_id: str | None  # lowercase hex, 32 digits; None when the record was emitted outside a trace
    span_id: str | None  # lowercase hex, 16 digits
    event_name: str  # the record's event_name, else its older `event.name` attribute, else ""
    time_ns: int  # the event's time, else the time the SDK observed it
    body: Any
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    scope: str  # the instrumentation scope's name
    index: int  # position among the message's log records: the batch index of a dead letter


@dataclass
class LogRecords:
    records: list[LogEvent]
    rejections: list[Rejection]


@dataclass(frozen=True)
class _Signal:
    """What differs between the trace and the log messages of the exporter."""

    message: type[Message]
    name: str  # the message's name in a reason
    root: tuple[str, str]  # OTLP/JSON's key of the resource list, and protobuf's own name for it
    scopes: tuple[str, str]
    items: str  # spans, logRecords


_TRACES = _Signal(TracesData, "TracesData", ("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), "spans")
_LOGS = _Signal(LogsData, "LogsData", ("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), "logRecords")


def decode_spans(raw: bytes | None, max_bytes: int, encoding: Encoding = "auto") -> Spans:
    """One Kafka message → its spans and a located reason for whatever cannot be read. Never raises."""
    if raw is None or not raw:
        return Spans([], [Rejection("empty_message", "message has no value")])
    if len(raw) > max_bytes:
        return Spans([], [Rejection("too_large", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")])
    try:
        data = _parse(raw, encoding, _TRACES)
    except _Bad as bad:
        return Spans([], [bad.rejection])
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises": anything unforeseen is a rejection
        return Spans([], [Rejection("malformed_otlp", f"undecodable ({type(exc).__name__})")])
    assert isinstance(data, TracesData)
    return _flatten(data)


def decode_logs(raw: bytes | None, max_bytes: int, encoding: Encoding = "auto") -> LogRecords:
    """One Kafka message of the exporter's logs → its log records and a located reason for whatever cannot be read.
    The same reasons as spans (`invalid_log_record` for one record). Never raises."""
    if raw is None or not raw:
        return LogRecords([], [Rejection("empty_message", "message has no value")])
    if len(raw) > max_bytes:
        return LogRecords([], [Rejection("too_large", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")])
    try:
        data = _parse(raw, encoding, _LOGS)
    except _Bad as bad:
        return LogRecords([], [bad.rejection])
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises": anything unforeseen is a rejection
        return LogRecords([], [Rejection("malformed_otlp", f"undecodable ({type(exc).__name__})")])
    assert isinstance(data, LogsData)
    return _flatten_logs(data)


def looks_like_json(raw: bytes) -> bool:
    """Safe auto-detection: a serialized TracesData starts with field 1 (0x0A) and never with `{`; JSON starts with
    `{` after optional whitespace. A leading `\\n` is ambiguous, so JSON is tried first and protobuf after."""
    head = raw.lstrip(b" \t\r\n")[:1]
    return head == b"{"


class _Bad(Exception):
    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


def _parse(raw: bytes, encoding: Encoding, signal: _Signal) -> Message:
    if encoding == "otlp_json" or (encoding == "auto" and looks_like_json(raw)):
        try:
            return _parse_json(raw, signal)
        except _Bad:
            if encoding == "auto" and raw[:1] == b"\n":  # may be protobuf after all (field 1, then a length)
                return _parse_proto(raw, signal)
            raise
    return _parse_proto(raw, signal)


def _parse_proto(raw: bytes, signal: _Signal) -> Message:
    data = signal.message()
    try:
        data.ParseFromString(raw)
    except DecodeError as exc:
        raise _Bad(Rejection("malformed_protobuf", f"not an OTLP {signal.name} message ({exc})")) from None
    if not getattr(data, signal.root[1]):
        raise _Bad(Rejection("empty_batch", f"the {signal.name} message holds no {signal.root[0]}"))
    return data


def _parse_json(raw: bytes, signal: _Signal) -> Message:
    try:
        value = jiter.from_json(raw, allow_inf_nan=False, catch_duplicate_keys=True)
    except ValueError as exc:
        raise _Bad(Rejection("malformed_json", str(exc))) from None
    if not isinstance(value, dict):
        raise _Bad(Rejection("not_an_object", f"OTLP/JSON is one {signal.name} object"))
    resources = value.get(signal.root[0], value.get(signal.root[1]))
    if not isinstance(resources, list) or not resources:
        raise _Bad(Rejection("empty_batch", f"no {signal.root[0]} in the OTLP/JSON message"))
    try:
        _hex_ids_to_base64(resources, signal)
    except ValueError as exc:  # our own message: which id is not hex (an id is no secret)
        raise _Bad(Rejection("malformed_otlp", f"not OTLP/JSON {signal.name} ({str(exc)[:300]})")) from None
    try:
        data = signal.message()
        json_format.ParseDict(value, data, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
        raise _Bad(Rejection("malformed_otlp", f"not OTLP/JSON {signal.name} ({_where(exc)})")) from None
    return data


_FIELD = re.compile(r"Failed to parse (\w+) field")


def _where(exc: Exception) -> str:
    """The field path of a protobuf JSON parse error, never its detail: that detail quotes the offending value (an
    attribute such as a tool result may hold a secret), and the reason is a clear-text DLQ header."""
    path = _FIELD.findall(str(exc))
    return f"invalid value at {'.'.join(path)}" if path else type(exc).__name__


def _hex_ids_to_base64(resources: list[Any], signal: _Signal) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON parser expects base64 for bytes fields."""
    for rs in resources:
        for ss in _list(rs, *signal.scopes):
            for item in _list(ss, signal.items, "log_records" if signal is _LOGS else signal.items):
                _fix_ids(item)
                for link in _list(item, "links"):
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


def _flatten_logs(data: LogsData) -> LogRecords:
    out = LogRecords([], [])
    index = 0
    for rl in data.resource_logs:
        resource = attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                if len(r.trace_id) not in (0, 16) or len(r.span_id) not in (0, 8):
                    out.rejections.append(Rejection(
                        "invalid_log_record", f"trace id of {len(r.trace_id)} bytes and span id of {len(r.span_id)} "
                        "bytes (OTLP wants 16 and 8, or none)", index))
                else:
                    attrs = attributes(r.attributes)
                    name = r.event_name or attrs.get("event.name")
                    out.records.append(LogEvent(
                        trace_id=binascii.hexlify(r.trace_id).decode() if r.trace_id else None,
                        span_id=binascii.hexlify(r.span_id).decode() if r.span_id else None,
                        event_name=name if isinstance(name, str) else "",
                        time_ns=r.time_unix_nano or r.observed_time_unix_nano,
                        body=_value(r.body, 0), attributes=attrs, resource=resource, scope=sl.scope.name,
                        index=index))
                index += 1
    if index == 0:
        out.rejections.append(Rejection("empty_batch", "the message holds no log records"))
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
