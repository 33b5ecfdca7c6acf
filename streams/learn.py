"""Read recorded activity for `warden policy learn`: every file, in any format `warden replay` reads (or each
message of the activity topic, service/runtime/topic_window.py), through the worker's strict decoder, one record at a
time. A bad record is reported and skipped; a file that cannot be read
or framed is reported and the next one read; a large file is streamed, never held whole."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from streams.backtest import (
    DEFAULT_RECORD_BYTES,
    LENGTH_DELIMITED,
    MAX_DOCUMENT_BYTES,
    FramingError,
    Invalid,
    records,
)
from streams.ingest import FORMATS, Decoder
from warden.policy.learn import Learner

FRAME_HEADER = 4  # the big-endian length before each message, as streams.backtest.frames reads it
MAX_REPORTED = 1_000  # invalid records listed (all are counted)
PROGRESS_EVERY = 100_000  # events between two progress calls
_CHUNK = 1 << 20


@dataclass
class Read:
    """What was read: valid events, and the invalid records and unreadable files, located."""

    events: int = 0
    records: int = 0
    invalid: list[Invalid] = field(default_factory=list)
    invalid_count: int = 0

    def reject(self, where: str, reason: str) -> None:
        self.invalid_count += 1
        if len(self.invalid) < MAX_REPORTED:
            self.invalid.append(Invalid(where, reason))


def learn_files(paths: Iterable[Path], learner: Learner, fmt: str = "native",
                max_bytes: int = DEFAULT_RECORD_BYTES, progress: Callable[[int], None] | None = None) -> Read:
    """Fold every valid event of every file into `learner`, in order. Never raises for bad input."""
    decode = FORMATS[fmt]
    out = Read()
    for path in paths:
        try:
            for where, raw in file_records(path, fmt, max_bytes):
                whole_array = where == "file" and raw.lstrip()[:1] == b"["
                learn_message(f"{path}: {where}", raw, learner=learner, decode=decode,
                              max_bytes=MAX_DOCUMENT_BYTES if whole_array else max_bytes, out=out, progress=progress)
        except FramingError as exc:
            out.reject(str(path), f"not {fmt}: {exc}; the rest of the file is skipped")
        except OSError as exc:
            out.reject(str(path), f"cannot read: {exc.strerror or exc}")
    return out


def learn_message(where: str, raw: bytes | None, *, learner: Learner, decode: Decoder, max_bytes: int, out: Read,
                  progress: Callable[[int], None] | None = None) -> None:
    """One record (a line, a frame, a Kafka message) through the strict decoder into `learner`; its rejections are
    counted in `out`, located at `where`. The same for every source, so a file and the topic are read alike."""
    out.records += 1
    decoded = decode(raw, max_bytes)
    for rejection in decoded.rejections:
        out.reject(where if rejection.index is None else f"{where}, element {rejection.index}", rejection.reason)
    for event in decoded.events:
        learner.observe(event)
        out.events += 1
        if progress is not None and out.events % PROGRESS_EVERY == 0:
            progress(out.events)


def file_records(path: Path, fmt: str = "native", max_bytes: int = DEFAULT_RECORD_BYTES
                 ) -> Iterator[tuple[str, bytes]]:
    """The file's records as `streams.backtest.records` cuts them; past 64 MiB (no longer one JSON document) the
    file is streamed: lines, or length-delimited frames, each read only up to `max_bytes` + 1 bytes (the decoder
    then rejects it as too large)."""
    if path.stat().st_size <= MAX_DOCUMENT_BYTES:
        yield from records(path.read_bytes(), fmt)
        return
    with path.open("rb") as f:
        if fmt in LENGTH_DELIMITED:
            yield from _frames(f, path.stat().st_size, max_bytes)
        else:
            yield from _lines(f, max_bytes)


def _lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[str, bytes]]:
    n = 0
    while True:
        line = f.readline(max_bytes + 2)
        if not line:
            return
        n += 1
        if not line.endswith(b"\n") and len(line) > max_bytes:
            while (rest := f.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass  # the rest of an over-long line: never held
        if line.strip():
            yield f"line {n}", line.rstrip(b"\r\n")


def _frames(f: BinaryIO, total: int, max_bytes: int) -> Iterator[tuple[str, bytes]]:
    at, n = 0, 0
    while header := f.read(FRAME_HEADER):
        n += 1
        if len(header) < FRAME_HEADER:
            raise FramingError(f"message {n} at byte {at}: {len(header)} byte(s) left, a frame header is 4")
        size = int.from_bytes(header, "big")
        if size > total - at - FRAME_HEADER:
            raise FramingError(f"message {n} at byte {at}: its length prefix says {size} bytes, "
                               f"{total - at - FRAME_HEADER} are left (is the file length-delimited?)")
        body = f.read(min(size, max_bytes + 1))
        if size > len(body):
            f.seek(size - len(body), 1)  # an over-long frame: only its first max_bytes + 1 bytes are read
        yield f"message {n} (byte {at})", body
        at += FRAME_HEADER + size
