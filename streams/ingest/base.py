"""What every ingest format returns: the events it could read and a located reason for everything else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from warden.contract.events import ActivityEvent


@dataclass(frozen=True)
class Rejection:
    """Why one message (or one element of a batch) cannot be processed."""

    code: str
    detail: str
    index: int | None = None  # position inside a batch message

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass
class Decoded:
    events: list[ActivityEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # Where each event sat in its batch (parallel to `events`; None for a single-event message), so a failure
    # later on can still dead-letter that one element by its index.
    indices: list[int | None] = field(default_factory=list)

    def add(self, event: ActivityEvent, index: int | None) -> None:
        self.events.append(event)
        self.indices.append(index)

    def index_of(self, position: int) -> int | None:
        return self.indices[position] if position < len(self.indices) else None


# An ingest format: one Kafka message's bytes and the size limit in, events and rejections out. Never raises.
Decoder = Callable[[bytes | None, int], Decoded]

# Every reason code a format may give; the DLQ's `warden.reason_code` is one of these (or the worker's own).
REASON_CODES = frozenset({
    "empty_message", "too_large", "not_utf8", "malformed_json", "too_deep", "duplicate_key", "non_finite_number",
    "lone_surrogate", "not_an_object", "empty_batch", "unknown_kind", "missing_field", "invalid_event",
    "malformed_protobuf", "malformed_otlp", "invalid_span",  # the OTLP span formats (streams/ingest/otlp*.py)
    "invalid_log_record",  # the OTLP log format (streams/ingest/otlp_logs.py)
})
