"""`warden dlq replay`: dead letters are sealed (they may carry tokens), so re-ingesting one needs the seal key, and
the consumer group remembers what was replayed; nothing not replayed is ever read past for good."""

from __future__ import annotations

import asyncio
import difflib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click

from service.cli.exits import Exit
from service.cli.failure import Failure, unreachable
from service.cli.output import Output, line, output_option
from service.runtime.kafka_access import KafkaAccess, access
from service.runtime.settings import Settings
from streams.ingest import ACTIVITY
from streams.ingest.base import REASON_CODES
from streams.ingest.split import split_array
from warden.kit.sealing import KEY_FILE, SCHEME, Sealer, SealError

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

REPLAYED_FROM = "warden.replayed_from"
# Every `warden.reason_code` a dead letter can carry: the ingest formats' and the workers' own (service/runtime).
KNOWN_REASONS = REASON_CODES | {"processing_error", "invalid_finding"}
PROGRESS_EVERY = 1000  # dead letters between two progress lines on standard error

REPLAYED, WOULD_REPLAY = "replayed", "would_replay"
HELD = "held"  # not replayed now, replayable later: the group's offset stays on it (another reason, another key)
UNREPLAYABLE = "unreplayable"  # can never be replayed (truncated, no value): read past, reported


@dataclass(frozen=True)
class Outcome:
    """What happened to one dead letter (never its content: it may hold secrets)."""

    partition: int
    offset: int
    reason_code: str
    action: str  # replayed, would_replay, held, unreplayable
    note: str = ""
    to: str = ""


class UnknownReason(ValueError):
    """A --reason that no dead letter can carry, with the nearest known codes."""


def check_reasons(reasons: tuple[str, ...]) -> frozenset[str]:
    """The reasons as a set, when each is a known code; else UnknownReason naming the nearest."""
    for reason in reasons:
        if reason not in KNOWN_REASONS:
            near = difflib.get_close_matches(reason, sorted(KNOWN_REASONS), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}?" if near else f"known: {', '.join(sorted(KNOWN_REASONS))}"
            raise UnknownReason(f"--reason {reason!r} is no dead-letter reason code; {hint}")
    return frozenset(reasons)


def seal_key_of(settings: Settings) -> Sealer:
    """The workers' key: WARDEN_SEAL_KEY, or the embedded worker's key file when it exists. Never a new key: one
    generated here would open nothing."""
    path = settings.data_dir / KEY_FILE
    try:
        key = settings.seal_key.get_secret_value().encode() if settings.seal_key else path.read_bytes().strip()
        return Sealer(key)
    except FileNotFoundError:
        raise Failure(f"set WARDEN_SEAL_KEY to the workers' key (no {path} either): without it no dead letter can "
                      "be opened; nothing was read", Exit.INVALID_INPUT) from None
    except OSError as exc:  # a data dir this user cannot read
        raise unreachable(f"the seal key file {path}", exc) from None
    except ValueError as exc:
        raise Failure(f"WARDEN_SEAL_KEY: {exc}", Exit.INVALID_INPUT) from None


async def replay(settings: Settings, kafka: KafkaAccess | str, *, group: str, reasons: frozenset[str] = frozenset(),
                 idle_s: float = 2.0, dry_run: bool = False,
                 on_progress: Callable[[list[Outcome]], None] | None = None) -> list[Outcome]:
    """Read the DLQ as consumer group `group` until it has been idle for `idle_s`, open each dead letter with the
    seal key and produce it again to the topic it came from (only its element, for one element of a batch).

    The group's offset of a partition moves past a letter only once it is replayed (or can never be: truncated, no
    value). A letter held back (a reason not selected, a key that does not open it) stops its partition for this
    run, so the group's offset stays on it and the next run starts there; the letters behind it wait, and none is
    replayed twice. Nothing dead-lettered after the replay began is read (it would go round for ever). `dry_run`
    commits nothing and produces nothing."""
    kafka = access(kafka)
    sealer = seal_key_of(settings)
    consumer = kafka.consumer(settings.topic_dlq, group_id=group,
                              auto_offset_reset="earliest", enable_auto_commit=False,
                              session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
                              heartbeat_interval_ms=int(settings.kafka_heartbeat_interval_s * 1000),
                              rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
                              max_partition_fetch_bytes=2 * settings.dlq_max_bytes)
    producer = kafka.producer(acks="all",
                              max_request_size=settings.dlq_max_bytes + 64 * 1024)
    await consumer.start()
    try:
        await producer.start()
    except BaseException:
        await consumer.stop()
        raise
    outcomes: list[Outcome] = []
    started_ms = time.time() * 1000
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=200)
            done: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                for record in records:
                    if record.timestamp >= started_ms:  # dead-lettered since this replay began (maybe by it)
                        consumer.pause(tp)
                        break
                    outcome = await _replay_one(record, settings, sealer.open_bytes, producer=producer,
                                                reasons=reasons, dry_run=dry_run)
                    outcomes.append(outcome)
                    if on_progress is not None and len(outcomes) % PROGRESS_EVERY == 0:
                        on_progress(outcomes)
                    if outcome.action == HELD:  # the offset stays here: the next run starts with this letter
                        consumer.pause(tp)
                        break
                    done[tp] = record.offset + 1
            if batch:
                quiet_since = time.monotonic()
            if done and not dry_run:
                await consumer.commit(done)
    finally:
        await producer.stop()
        await consumer.stop()
    return outcomes


async def _replay_one(record: ConsumerRecord, settings: Settings, open_bytes: Callable[[bytes], bytes], *,
                      producer: AIOKafkaProducer, reasons: frozenset[str], dry_run: bool) -> Outcome:
    outcome, target, value = _open(record, open_bytes, settings.input_topic(ACTIVITY))
    if outcome.action != REPLAYED:
        return outcome
    if reasons and outcome.reason_code not in reasons:
        return Outcome(record.partition, record.offset, outcome.reason_code, HELD, "reason not selected")
    if dry_run:
        return Outcome(record.partition, record.offset, outcome.reason_code, WOULD_REPLAY, to=target)
    origin = f"{settings.topic_dlq}@{record.partition}:{record.offset}".encode()
    await (await producer.send(target, value, key=record.key, headers=[(REPLAYED_FROM, origin)]))
    return outcome


def _open(record: ConsumerRecord, open_bytes: Callable[[bytes], bytes],
          default_topic: str) -> tuple[Outcome, str, bytes]:
    headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}
    code = headers.get("warden.reason_code", "")
    target = headers.get("warden.source_topic", default_topic)

    def not_now(action: str, note: str) -> tuple[Outcome, str, bytes]:
        return Outcome(record.partition, record.offset, code, action, note), target, b""

    if record.value is None:
        return not_now(UNREPLAYABLE, "no value")
    if "warden.truncated_from" in headers:
        return not_now(UNREPLAYABLE, f"truncated from {headers['warden.truncated_from']} bytes: the original is "
                       "not all here")
    value: bytes = record.value
    if headers.get("warden.sealed", "").encode() == SCHEME:
        try:
            value = open_bytes(value)
        except SealError as exc:
            return not_now(HELD, str(exc))
    index = headers.get("warden.batch_index")
    if index is not None:
        spans = split_array(value)
        if spans is None or not index.isdigit() or int(index) >= len(spans):
            return not_now(UNREPLAYABLE, f"batch element {index} cannot be cut out of the message")
        start, end = spans[int(index)]
        value = value[start:end].strip()
    return Outcome(record.partition, record.offset, code, REPLAYED, to=target), target, value


@click.group()
def dlq() -> None:
    """Work with dead letters on WARDEN_TOPIC_DLQ (sealed with WARDEN_SEAL_KEY)."""


@dlq.command("replay")
@click.option("--reason", "reasons", multiple=True, metavar="CODE", shell_complete=lambda _ctx, _param, part: [
    code for code in sorted(KNOWN_REASONS) if code.startswith(part)], help="Replay only dead letters with this reason "
              "code (repeatable; docs/events.md lists them). The others are held: the group does not move past "
              "them.")
@click.option("--group", default=None, help="Consumer group that remembers what was replayed "
              "[default: WARDEN_APP_ID + '.dlq-replay'].")
@click.option("--idle", "idle_s", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Stop after this many seconds without a new dead letter.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; produce nothing, commit nothing.")
@output_option("jsonl")
def replay_command(reasons: tuple[str, ...], group: str | None, idle_s: float, dry_run: bool,
                   output: Output) -> None:
    """Open each dead letter with the seal key and produce it again to the topic it came from (one element of a
    batch alone). Prints each dead letter's fate (never its content) and a summary. Exit 0 when every letter read
    was replayed (or would be), 1 when some were held or unreplayable, 2 on a bad option or no seal key, 4 when
    Kafka cannot be reached."""
    from aiokafka.errors import KafkaError

    from service.cli import _settings

    try:
        selected = check_reasons(reasons)
    except UnknownReason as exc:
        raise click.BadParameter(str(exc).removeprefix("--reason "), param_hint="--reason") from None
    settings = _settings()
    if not settings.kafka_bootstrap:
        raise Failure("set WARDEN_KAFKA_BOOTSTRAP: the embedded broker keeps nothing between runs",
                      Exit.INVALID_INPUT)
    seal_key_of(settings)  # refuse before connecting
    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # without -v, the failure is our one line, not theirs
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    def progress(so_far: list[Outcome]) -> None:
        moved = sum(o.action in {REPLAYED, WOULD_REPLAY} for o in so_far)
        click.echo(f"warden: dlq replay: {len(so_far)} read, {moved} {'would be ' if dry_run else ''}replayed",
                   err=True)

    try:
        outcomes = asyncio.run(replay(settings, KafkaAccess.from_settings(settings), reasons=selected, idle_s=idle_s,
                                      group=group or f"{settings.app_id}.dlq-replay", dry_run=dry_run,
                                      on_progress=progress))
    except (KafkaError, OSError) as exc:
        raise unreachable(f"Kafka at {settings.kafka_bootstrap}", exc) from None
    counts = {a: sum(o.action == a for o in outcomes) for a in (REPLAYED, WOULD_REPLAY, HELD, UNREPLAYABLE)}
    summary = {"read": len(outcomes), **counts, "dry_run": dry_run, "topic": settings.topic_dlq,
               "source": f"Kafka {settings.kafka_bootstrap}"}
    if output == "json":
        click.echo(line({"letters": [asdict(o) for o in outcomes], "summary": summary}))
    elif output == "jsonl":
        for outcome in outcomes:
            click.echo(line(asdict(outcome)))
        click.echo(line({"summary": summary}))
    else:
        for o in outcomes:
            verb = {REPLAYED: f"replayed to {o.to}", WOULD_REPLAY: f"would replay to {o.to}"}.get(o.action, o.action)
            click.echo(f"{settings.topic_dlq}@{o.partition}:{o.offset} {o.reason_code or '-'}: {verb}"
                       + (f" ({o.note})" if o.note else ""))
        moved = counts[WOULD_REPLAY] if dry_run else counts[REPLAYED]
        click.echo(f"{len(outcomes)} dead letter(s) read from {settings.topic_dlq} on Kafka "
                   f"{settings.kafka_bootstrap}: {moved} {'would be replayed' if dry_run else 'replayed'}, "
                   f"{counts[HELD]} held (the group stays on them), {counts[UNREPLAYABLE]} unreplayable")
    sys.exit(Exit.OK if counts[HELD] + counts[UNREPLAYABLE] == 0 else Exit.FOUND)
