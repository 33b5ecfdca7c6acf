"""Replay recorded activity through the detectors offline: the same `detect` as the worker, event time driving the
windows, invalid events reported and skipped. `warden replay` prints what this returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import jiter

from streams.detectors import DetectorState, detect
from streams.detectors.custom import RuleErrorTally
from streams.ingest import FORMATS
from warden.contract.findings import Finding
from warden.policy import Policy

MAX_DOCUMENT_BYTES = 64 << 20  # a whole-file JSON array (a week's events); one event is held to a Kafka message's
DEFAULT_RECORD_BYTES = 1_048_576  # one line or frame: the worker's default WARDEN_MAX_MESSAGE_BYTES
# Formats whose records are binary: framed by length, never split at newline bytes (docs/replay.md).
LENGTH_DELIMITED = frozenset({"otlp_proto", "otlp_logs_proto"})
_FRAME_HEADER = 4  # a big-endian uint32 before each message, as the Collector's file exporter writes `format: proto`


@dataclass(frozen=True)
class Invalid:
    """An event (or a line) that failed validation: where it is in the file, and why."""

    where: str
    reason: str


@dataclass
class Backtest:
    """What a replay found, in input order."""

    events: int = 0
    findings: list[Finding] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)
    rule_errors: dict[str, RuleErrorTally] = field(default_factory=dict)
    """Per custom rule that raised on some event: how often, and the first event and error."""

    def summary(self) -> list[tuple[str, str, bool, int]]:
        """(rule, severity, shadow, count), sorted so the same input always prints the same lines."""
        counts = Counter((f.rule, f.severity.value, f.shadow) for f in self.findings)
        return [(r, s, sh, n) for (r, s, sh), n in sorted(counts.items())]


class FramingError(ValueError):
    """The file is not in the framing its format needs (a length-delimited frame runs past the end)."""


def records(data: bytes, fmt: str = "native") -> Iterator[tuple[str, bytes]]:
    """The file's records, located. Text formats: the file as one document when it is one JSON value (an array or an
    object, pretty-printed or not, or a single line), else JSON Lines. Binary formats: length-delimited frames."""
    if fmt in LENGTH_DELIMITED:
        yield from frames(data)
        return
    if _one_document(data):
        yield "file", data
        return
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield f"line {n}", line


def _one_document(data: bytes) -> bool:
    """Whether the whole file is one JSON value. Only the framing is judged here, without recursion (no
    RecursionError on deep nesting): the strict decoder then judges the content, as the worker's does."""
    stripped = data.strip()
    if b"\n" not in stripped and b"\r" not in stripped:
        return bool(stripped)
    try:
        jiter.from_json(stripped, allow_inf_nan=True, catch_duplicate_keys=False, cache_mode="none")
    except ValueError:
        return False  # trailing data (JSON Lines), or too deep to tell: each line then stands alone
    return True


def frames(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Length-delimited messages: each a 4-byte big-endian length, then that many bytes. Raises FramingError when a
    frame claims more bytes than the file has left (a truncated file, or one that is not framed at all)."""
    at, n = 0, 0
    while at < len(data):
        n += 1
        if len(data) - at < _FRAME_HEADER:
            raise FramingError(f"message {n} at byte {at}: {len(data) - at} byte(s) left, a frame header is 4")
        size = int.from_bytes(data[at:at + _FRAME_HEADER], "big")
        start = at + _FRAME_HEADER
        if size > len(data) - start:
            raise FramingError(f"message {n} at byte {at}: its length prefix says {size} bytes, "
                               f"{len(data) - start} are left (is the file length-delimited?)")
        yield f"message {n} (byte {at})", data[start:start + size]
        at = start + size


def frame(message: bytes) -> bytes:
    """One message as `frames` reads it (for writers and tests)."""
    return len(message).to_bytes(_FRAME_HEADER, "big") + message


def backtest(data: bytes, policy: Policy, fmt: str = "native", max_bytes: int = DEFAULT_RECORD_BYTES,
             on_record: Callable[[int], None] | None = None) -> Backtest:
    """Decode every record with the worker's strict decoder for `fmt` (each line or frame at most `max_bytes`, as a
    Kafka message), then judge each valid event in order with fresh state. Raises FramingError."""
    decode = FORMATS[fmt]
    state = DetectorState()
    out = Backtest()
    for n, (where, raw) in enumerate(records(data, fmt), 1):
        if on_record is not None:
            on_record(n)
        whole_array = where == "file" and raw.lstrip()[:1] == b"["  # a batch of events, not one event
        decoded = decode(raw, MAX_DOCUMENT_BYTES if whole_array else max_bytes)
        for rejection in decoded.rejections:
            at = where if rejection.index is None else f"{where}, element {rejection.index}"
            out.invalid.append(Invalid(at, rejection.reason))
        for event in decoded.events:
            out.events += 1
            out.findings.extend(detect(event, policy, state))
    out.rule_errors = dict(sorted(state.rule_errors.by_rule.items()))
    return out
