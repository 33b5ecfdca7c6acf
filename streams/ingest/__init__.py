"""Ingest formats: raw bytes from a topic in, validated events or DLQ reasons out. One module per format."""

from __future__ import annotations

from functools import partial

from streams.ingest import native, otlp, otlp_logs
from streams.ingest.base import Decoded, Decoder, Rejection

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

__all__ = ["FORMATS", "Decoded", "Decoder", "Rejection"]
