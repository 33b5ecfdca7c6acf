"""Ingest formats: raw bytes from a topic in, validated events or DLQ reasons out. One module per format."""

from __future__ import annotations

from functools import partial

from streams.ingest import native, otlp, otlp_logs
from streams.ingest.base import Decoded, Decoder, Rejection
from streams.ingest.live import HoldingIngest, LiveInput, Reading

# Adding a format = one module with a `decode` of the `Decoder` shape + one line here.
FORMATS: dict[str, Decoder] = {
    "native": native.decode,
    # Stateless, one message alone (replay); the span topic's worker holds spans across messages (otlp.OtlpIngest).
    "otlp_json": partial(otlp.decode_message, encoding="otlp_json"),
    "otlp_proto": partial(otlp.decode_message, encoding="otlp_proto"),
    # The log topic's GenAI events, one message alone (their agent from the record, resource or service).
    "otlp_logs_json": partial(otlp_logs.decode_message, encoding="otlp_json"),
    "otlp_logs_proto": partial(otlp_logs.decode_message, encoding="otlp_proto"),
}

# The topics the live worker consumes, by setting name (WARDEN_TOPIC_<NAME>). Adding a live input = its format's
# module + one line here: the settings, the topics Warden creates, the worker's inputs and the chart follow.
INPUTS: dict[str, LiveInput] = {
    "activity": LiveInput("warden.activity", "Native activity events (JSON, one or a batch per message), keyed by "
                          "agent id.", replay=lambda r: native.decode),
    "otlp": LiveInput("otlp_spans", "OTLP spans from the OpenTelemetry Collector's kafka exporter (its default "
                      "traces.topic).", replay=lambda r: otlp.replay_decoder(r.encoding, r.policy),
                      holding=lambda r: otlp.OtlpIngest(r.encoding, max_bytes=r.max_bytes, resolver=r.resolver)),
    "otlp_logs": LiveInput("otlp_logs", "OTLP logs (GenAI events) from the Collector's kafka exporter (its default "
                           "logs.topic), joined to their spans by trace and span id.",
                           replay=lambda r: otlp_logs.replay_decoder(r.encoding, r.policy),
                           holding=lambda r: otlp_logs.LogIngest(r.resolver, r.encoding, max_bytes=r.max_bytes)),
}
ACTIVITY = "activity"  # the native input: the approval path and the lag metric read it

__all__ = ["ACTIVITY", "FORMATS", "INPUTS", "Decoded", "Decoder", "HoldingIngest", "LiveInput", "Reading",
           "Rejection"]
