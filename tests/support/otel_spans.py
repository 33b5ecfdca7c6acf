"""Real OpenTelemetry SDK spans for the OTLP ingest tests, encoded by the OTLP exporter's own encoder.

`Recorder` is a TracerProvider with an in-memory exporter behind a SimpleSpanProcessor, so spans come out in the
order they end: children (tool calls) before their parent (`invoke_agent`), as a real SDK exports them.
`otlp_proto` is what the Collector's Kafka exporter writes by default (`otlp_proto`); `otlp_json` follows the
OTLP/JSON rules (hex ids, integer enums, int64 as decimal strings).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._internal import _encode_value
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, Tracer

# otlp_proto or otlp_json, as the tests parametrize them
Encode = Callable[[Sequence[ReadableSpan] | ExportTraceServiceRequest], bytes]

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


class Recorder:
    """One service's tracer: its resource attributes (service.name, maybe gen_ai.agent.id) and its finished spans."""

    def __init__(self, **resource: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create(resource))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = self.provider.get_tracer("warden.tests", "1.0")
        # GenAI events on the logs signal, from the same service: emitted inside a span, they carry its ids.
        self.log_exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # the SDK's __init__ is unannotated
        self.log_provider = LoggerProvider(resource=Resource.create(resource))
        self.log_provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_exporter))
        self.logger = self.log_provider.get_logger("warden.tests", "1.0")

    def event(self, name: str, body: Any = None, **attributes: Any) -> None:
        """A GenAI event (a log record named `name`) in the current span's context."""
        self.logger.emit(event_name=name, body=body, attributes=attributes or None)

    def finished_logs(self) -> list[ReadableLogRecord]:
        """The log records in emission order, and clears them."""
        records = list(self.log_exporter.get_finished_logs())
        self.log_exporter.clear()
        return records

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        with self.tracer.start_as_current_span(name, attributes=attributes) as s:
            yield s

    def agent(self, agent_id: str, **attributes: Any) -> Any:
        return self.span(f"invoke_agent {agent_id}", **{"gen_ai.operation.name": "invoke_agent",
                                                         "gen_ai.agent.id": agent_id, **attributes})

    def tool(self, name: str, arguments: dict[str, Any] | None = None, /, **attributes: Any) -> Any:
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                                 "gen_ai.tool.type": "function", **attributes}
        if arguments is not None:
            attrs["gen_ai.tool.call.arguments"] = json.dumps(arguments)  # a JSON string, as instrumentations set it
        return self.span(f"execute_tool {name}", **attrs)

    def finished(self) -> list[ReadableSpan]:
        """The spans in export order (children first), and clears them."""
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans


def request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    return encode_spans(spans)


def otlp_proto(spans: Sequence[ReadableSpan] | ExportTraceServiceRequest) -> bytes:
    req = spans if isinstance(spans, ExportTraceServiceRequest) else request(spans)
    return cast(bytes, req.SerializeToString())  # protobuf's runtime has no type hints: Any


def otlp_json(spans: Sequence[ReadableSpan] | ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON: protobuf's JSON mapping with camelCase names, integer enums and hex trace/span ids."""
    req = spans if isinstance(spans, ExportTraceServiceRequest) else request(spans)
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in _ID_KEYS:
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(doc).encode()


def set_attribute(req: ExportTraceServiceRequest, span_name: str, key: str, value: Any) -> None:
    """Replace one span attribute with any AnyValue (a kvlist for a dict), as SDKs that allow map attributes send."""
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                if span.name == span_name:
                    for kv in span.attributes:
                        if kv.key == key:
                            kv.value.CopyFrom(_encode_value(value))
                            return
                    kv = span.attributes.add()
                    kv.key = key
                    kv.value.CopyFrom(_encode_value(value))
                    return
    raise AssertionError(f"no span named {span_name!r}")


def logs_proto(records: Sequence[ReadableLogRecord]) -> bytes:
    """What the exporter writes with `logs.encoding: otlp_proto` (the same wire layout as LogsData)."""
    return cast(bytes, encode_logs(records).SerializeToString())  # protobuf's runtime: Any


def logs_json(records: Sequence[ReadableLogRecord] | ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON logs: camelCase, integer enums, hex trace and span ids."""
    req = records if isinstance(records, ExportLogsServiceRequest) else encode_logs(records)
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for record in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex()
    return json.dumps(doc).encode()
