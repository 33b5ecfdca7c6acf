"""`warden policy learn`: draft a matrix folder from recorded activity (event files, or the activity topic over a
time range), check it with the lint, say what it read."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from service.cli.exits import Exit
from service.cli.failure import Failure
from service.cli.policy_output import chosen, emit_json, emit_jsonl, output_option, shown
from service.cli.times import When, epoch_ms, iso
from service.runtime.catalogue import load
from streams.backtest import DEFAULT_RECORD_BYTES
from streams.ingest import ACTIVITY, FORMATS
from streams.learn import Read, learn_files, learn_message
from warden.policy import Policy, PolicyError, policy_files
from warden.policy.learn import Draft, Learner, draft

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord

    from service.runtime.topic_window import WindowRead

LEARNED_FILE = "50-learned.yaml"
BASE_FILE = "00-base.yaml"
CURRENT_PREFIX = "00-current-"


@click.command(name="learn")
@click.argument("events", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--since", type=When(), help="Read the activity topic (WARDEN_TOPIC_ACTIVITY on "
              "WARDEN_KAFKA_BOOTSTRAP, with the workers' Kafka settings) from this record time on, instead of EVENTS: "
              "ISO-8601 (UTC unless an offset is given) or a time before now (30m, 24h, 7d).")
@click.option("--until", type=When(), help="With --since: up to this record time (excluded) [default: the end of "
              "the topic when the command starts].")
@click.option("--kafka-timeout", "kafka_timeout_s", type=click.FloatRange(min=0.5), default=15.0, show_default=True,
              help="With --since: seconds to connect, for each request, and without a record while reading, before "
                   "the read fails (exit 4).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The folder to write the draft matrix to (created; must be empty if it exists).")
@click.option("--policy", "current_path", type=click.Path(path_type=Path),
              help="The current matrix: its workflows' agents are mapped as today and its files copied into the "
                   "draft; without it every agent gets a stub workflow.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="native", show_default=True,
              help="Ingest format of EVENTS, as `warden replay` reads it.")
@click.option("--max-bytes", type=click.IntRange(min=1024), default=DEFAULT_RECORD_BYTES, show_default=True,
              envvar="WARDEN_MAX_MESSAGE_BYTES", help="Largest line, frame or single event.")
@output_option
def learn(*, events: tuple[Path, ...], since: datetime | None, until: datetime | None, kafka_timeout_s: float,
          out: Path, current_path: Path | None, fmt: str, max_bytes: int, output: str, as_json: bool) -> None:
    """Draft a matrix folder from recorded EVENTS (files in any format `warden replay` reads), or from the activity
    topic's records in [--since, --until).

    Per workflow: the tools used, argument constraints that generalise, data and secret globs, identity operations,
    each with a YAML comment giving its evidence; the rules they feed in shadow mode. Invalid records and unreadable
    files are reported and skipped. Exit 0: drafted, and the draft lints clean; 2: --out is not empty, no valid
    event was read, or the options or times are invalid; 3: --policy does not load; 4: Kafka cannot be reached, or
    the time range could not be read to its end (nothing is drafted then)."""
    fmt_out = chosen(output, as_json)
    _check_source(events, since, until, fmt)
    current = _load_current(current_path) if current_path is not None else None
    if out.exists() and any(out.iterdir()):
        click.echo(f"warden: {out} is not empty: the draft goes to a new or empty folder", err=True)
        sys.exit(Exit.INVALID_INPUT)
    learner = Learner(current)
    window: WindowRead | None = None
    if since is not None:
        window, read = _learn_topic(learner, since=since, until=until, timeout_s=kafka_timeout_s, max_bytes=max_bytes)
        source = (f"topic {window.topic} on Kafka {window.bootstrap}, records timed {iso(since)} .. "
                  f"{iso(until) if until else 'its end at the start'} ({_offsets(window)})")
    else:
        read, source = learn_files(events, learner, fmt, max_bytes, progress=_progress), f"{_names(events)} ({fmt})"
    if read.events == 0:
        _report_invalid(read, fmt_out)
        where = (f"{window.records} record(s) of {window.topic} in the range" if window is not None
                 else f"{len(events)} file(s)")
        click.echo(f"warden: no valid event in {where} ({read.invalid_count} invalid)", err=True)
        sys.exit(Exit.INVALID_INPUT)
    header = [f"Draft written by `warden policy learn` from {source}; "
              f"{read.invalid_count} invalid record(s) skipped."]
    if current is not None:
        header.append(f"Current matrix: {current_path} (sha256 {current.sha256}), copied as {CURRENT_PREFIX}*.")
    result = draft(learner, header)
    files = _write(out, result, current_path)
    try:
        loaded = load(out)
    except PolicyError as exc:  # a bug in the drafting, never the input's fault: say so and fail
        for issue in exc.issues:
            click.echo(f"warden: the draft does not lint (please report): {issue}", err=True)
        sys.exit(Exit.POLICY_ERROR)
    summary = {"out": str(out), "files": files, "events": read.events, "invalid": read.invalid_count,
               "drafted": result.drafted, "stubs": result.stubs, "untouched": result.untouched,
               "sha256": loaded.sha256, "shadow": True}
    if window is not None:
        summary["topic"] = _window_summary(window)
    invalid = [{"where": i.where, "reason": i.reason} for i in read.invalid]
    if fmt_out == "json":
        emit_json({"summary": summary, "invalid": invalid})
    elif fmt_out == "jsonl":
        emit_jsonl([*({"invalid": i} for i in invalid), {"summary": summary}])
    else:
        _report_invalid(read, fmt_out)
        if window is not None:
            _report_window(window)
        click.echo(f"drafted {len(result.drafted)} workflow(s) and {len(result.stubs)} stub(s) for unknown agents "
                   f"from {read.events} events; every drafted entry is in shadow mode")
        if result.untouched:
            click.echo("kept as they are (no activity seen): " + shown(", ".join(result.untouched)))
        click.echo(f"OK: {out} lints clean; sha256 {loaded.sha256}")
        click.echo(f"next: warden replay EVENTS --policy {out} --against {current_path or 'CURRENT'} (docs/learn.md)")
    sys.exit(Exit.OK)


def _load_current(path: Path) -> Policy:
    try:
        return load(path)
    except PolicyError as exc:
        for issue in exc.issues:
            click.echo(f"warden: policy error: {issue}", err=True)
        sys.exit(Exit.POLICY_ERROR)


def _names(events: tuple[Path, ...]) -> str:
    return ", ".join(str(e) for e in events)


def _check_source(events: tuple[Path, ...], since: datetime | None, until: datetime | None, fmt: str) -> None:
    """Exactly one source: EVENTS, or the topic's [--since, --until); usage errors exit 2 before anything is read."""
    if events and (since is not None or until is not None):
        raise Failure("give EVENTS (files) or --since/--until (the activity topic), not both", Exit.INVALID_INPUT)
    if since is None:
        if until is not None:
            raise Failure("--until needs --since: the activity topic is read over [--since, --until)",
                          Exit.INVALID_INPUT)
        if not events:
            raise Failure("give EVENTS (files in any format `warden replay` reads) or --since (the activity topic)",
                          Exit.INVALID_INPUT)
        return
    if fmt != "native":
        raise Failure(f"--format {fmt}: the activity topic holds native events (its spans' topic is not read here)",
                      Exit.INVALID_INPUT)
    if until is not None and until <= since:
        raise Failure(f"--until {iso(until)} is not after --since {iso(since)}", Exit.INVALID_INPUT)
    if since > datetime.now(UTC):
        raise Failure(f"--since {iso(since)} is in the future: no record is there yet", Exit.INVALID_INPUT)


def _progress(events: int) -> None:
    click.echo(f"warden: {events} events read", err=True)


def _learn_topic(learner: Learner, *, since: datetime, until: datetime | None, timeout_s: float, max_bytes: int
                 ) -> tuple[WindowRead, Read]:
    """Fold every record of the activity topic in [since, until) into `learner`, one at a time, through the same
    strict decoder as the worker and `replay`. Exit 4 when Kafka cannot be reached or the range is not read to its
    end: a draft from part of the range is never written as if it were the range."""
    from service.cli import _settings
    from service.runtime.kafka_access import KafkaAccess
    from service.runtime.topic_window import NoSuchTopic, WindowIncomplete, WindowUnreachable, read_window

    settings = _settings()
    if not settings.kafka_bootstrap:
        raise Failure("set WARDEN_KAFKA_BOOTSTRAP to the workers' Kafka: --since reads its activity topic (the "
                      "embedded broker keeps nothing between runs)", Exit.INVALID_INPUT)
    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # without -v, the failure is our one line, not theirs
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    decode, topic, read = FORMATS["native"], settings.input_topic(ACTIVITY), Read()

    def on_record(record: ConsumerRecord) -> None:
        learn_message(f"{topic}@{record.partition}:{record.offset}", record.value, learner=learner, decode=decode,
                      max_bytes=max_bytes, out=read, progress=_progress)

    until_ms = epoch_ms(until) if until is not None else None
    try:
        window = asyncio.run(read_window(KafkaAccess.from_settings(settings), topic, epoch_ms(since), until_ms,
                                         on_record, timeout_s=timeout_s, max_message_bytes=max_bytes))
    except WindowUnreachable as exc:
        raise Failure(f"{exc}; nothing was drafted", Exit.UNREACHABLE) from None
    except WindowIncomplete as exc:
        raise Failure(f"the range could not be read to its end: {exc}; {read.events} event(s) had been read, "
                      "nothing was drafted", Exit.UNREACHABLE) from None
    except NoSuchTopic as exc:
        raise Failure(str(exc), Exit.INVALID_INPUT) from None
    return window, read


def _offsets(window: WindowRead) -> str:
    """`partition 0 offsets 4..8, partition 1 offsets 0..0`: what was read, for the draft's header."""
    return ", ".join(f"partition {p.partition} offsets {p.start}..{p.end}" for p in window.partitions)


def _window_summary(window: WindowRead) -> dict[str, object]:
    return {"topic": window.topic, "bootstrap": window.bootstrap, "since_ms": window.since_ms,
            "until_ms": window.until_ms, "records": window.records, "outside": window.skipped,
            "seconds": round(window.seconds, 3), "partitions": [p.as_dict() for p in window.partitions]}


def _report_window(window: WindowRead) -> None:
    rate = f", {window.records / window.seconds:,.0f} records/s" if window.seconds > 0 and window.records else ""
    click.echo(f"read {window.records} record(s) in the range from {window.topic} on Kafka {window.bootstrap} "
               f"({len(window.partitions)} partition(s), {window.skipped} outside the range skipped by record time; "
               f"{window.seconds:.1f}s{rate})")
    for p in window.partitions:
        if p.maybe_deleted:
            click.echo(f"note: {window.topic} partition {p.partition} keeps records only from offset {p.log_start} "
                       "on (older ones were deleted by its retention): if --since reaches back further than the "
                       "retention, that part of the range is gone")


def _report_invalid(read: Read, fmt_out: str) -> None:
    if fmt_out != "text":
        return
    for bad in read.invalid:
        click.echo(f"invalid: {shown(bad.where)}: {shown(bad.reason)}")
    if read.invalid_count > len(read.invalid):
        click.echo(f"invalid: … and {read.invalid_count - len(read.invalid)} more")


def _write(out: Path, result: Draft, current_path: Path | None) -> list[str]:
    """The draft folder: the current matrix's files copied (so their comments stay), then the learned file, which
    replaces the drafted workflows (a later file wins a workflow, key by key) and puts their rules in shadow."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if current_path is not None:
        for source in policy_files(current_path):
            name = CURRENT_PREFIX + source.name
            (out / name).write_bytes(source.read_bytes())
            written.append(name)
    elif result.base_text is not None:
        (out / BASE_FILE).write_text(result.base_text, "utf-8")
        written.append(BASE_FILE)
    (out / LEARNED_FILE).write_text(result.text, "utf-8")
    written.append(LEARNED_FILE)
    return written
