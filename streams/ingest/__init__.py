"""Ingest formats: raw bytes from a topic in, validated events or DLQ reasons out. One module per format."""

from __future__ import annotations

from streams.ingest import native
from streams.ingest.base import Decoded, Decoder, Rejection

# Adding a format = one module with a `decode` of the `Decoder` shape + one line here.
FORMATS: dict[str, Decoder] = {
    "native": native.decode,
}

__all__ = ["FORMATS", "Decoded", "Decoder", "Rejection"]
