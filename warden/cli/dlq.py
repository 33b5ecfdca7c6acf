"""`warden dlq replay`: dead letters are sealed (they may carry tokens), so re-ingesting one needs the seal key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click

from streams.ingest.split import split_array
from warden.kit.sealing import SCHEME, SealError
from warden.runtime.kafka_access import KafkaAccess, access
from warden.runtime.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

REPLAYED_FROM = "warden.replayed_from"


@dataclass(frozen=True)
class Outcome:
    """What happened to one dead letter (never its content: it may hold secrets)."""

    partition: int
    offset: int
    reason_code: str
    action: str  # replayed, skipped
    note: str = ""
    to: str = ""


async def replay(settings: Settings, kafka: KafkaAccess | str, *, group: str, reasons: frozenset[str] = frozenset(),
                 idle_s: float = 2.0, dry_run: bool = False) -> list[Outcome]:
    """Read the DLQ as consumer group `group` until it has been idle for `idle_s`, open each dead letter with the
    seal key and produce it again to the topic it came from (only its element, for one element of a batch).
    The group's offsets move past everything read (unless `dry_run`), so a dead letter is replayed once per
    group; one that fails again is dead-lettered again, at a new offset, and that one waits for the next run
    (nothing dead-lettered after the replay began is read, or it would go round for ever)."""
    kafka = access(kafka)
    sealer = settings.sealer()
    consumer = kafka.consumer(settings.topic_dlq, group_id=group,
                              auto_offset_reset="earliest", enable_auto_commit=False,
                                session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
                                heartbeat_interval_ms=int(settings.kafka_heartbeat_interval_s * 1000),
                                rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
                                max_partition_fetch_bytes=2 * settings.dlq_max_bytes)
    producer = kafka.producer(acks="all",
                              max_request_size=settings.dlq_max_bytes + 64 * 1024)
    await consumer.start()
    await producer.start()
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
                    outcomes.append(await _replay_one(record, settings, sealer.open_bytes, producer=producer,
                                                      reasons=reasons, dry_run=dry_run))
                    done[tp] = record.offset + 1
            if done:
                quiet_since = time.monotonic()
                if not dry_run:
                    await consumer.commit({tp: offset for tp, offset in done.items()})
    finally:
        await producer.stop()
        await consumer.stop()
    return outcomes


async def _replay_one(record: ConsumerRecord, settings: Settings, open_bytes: Callable[[bytes], bytes], *,
                      producer: AIOKafkaProducer, reasons: frozenset[str], dry_run: bool) -> Outcome:
    outcome, target, value = _open(record, open_bytes, settings.topic_activity)
    if outcome.action == "replayed" and reasons and outcome.reason_code not in reasons:
        return Outcome(record.partition, record.offset, outcome.reason_code, "skipped", "reason not selected")
    if outcome.action == "replayed" and not dry_run:
        origin = f"{settings.topic_dlq}@{record.partition}:{record.offset}".encode()
        await (await producer.send(target, value, key=record.key, headers=[(REPLAYED_FROM, origin)]))
    return outcome


def _open(record: ConsumerRecord, open_bytes: Callable[[bytes], bytes],
          default_topic: str) -> tuple[Outcome, str, bytes]:
    headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}
    code = headers.get("warden.reason_code", "")
    target = headers.get("warden.source_topic", default_topic)

    def skipped(note: str) -> tuple[Outcome, str, bytes]:
        return Outcome(record.partition, record.offset, code, "skipped", note), target, b""

    if record.value is None:
        return skipped("no value")
    if "warden.truncated_from" in headers:
        return skipped(f"truncated from {headers['warden.truncated_from']} bytes: the original is not all here")
    value: bytes = record.value
    if headers.get("warden.sealed", "").encode() == SCHEME:
        try:
            value = open_bytes(value)
        except SealError as exc:
            return skipped(str(exc))
    index = headers.get("warden.batch_index")
    if index is not None:
        spans = split_array(value)
        if spans is None or not index.isdigit() or int(index) >= len(spans):
            return skipped(f"batch element {index} cannot be cut out of the message")
        start, end = spans[int(index)]
        value = value[start:end].strip()
    return Outcome(record.partition, record.offset, code, "replayed", to=target), target, value


@click.group()
def dlq() -> None:
    """Work with dead letters on WARDEN_TOPIC_DLQ (sealed with WARDEN_SEAL_KEY)."""


@dlq.command("replay")
@click.option("--reason", "reasons", multiple=True, help="Replay only dead letters with this reason code "
              "(repeatable); the others are read past all the same.")
@click.option("--group", default=None, help="Consumer group that remembers what was replayed "
              "[default: WARDEN_APP_ID + '.dlq-replay'].")
@click.option("--idle", "idle_s", default=2.0, show_default=True, help="Stop after this many seconds without a "
              "new dead letter.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; produce nothing, commit nothing.")
def replay_command(reasons: tuple[str, ...], group: str | None, idle_s: float, dry_run: bool) -> None:
    """Open each dead letter with the seal key and produce it again to the topic it came from (one element of a
    batch alone). Prints one JSON line per dead letter (never its content) and a summary line."""
    from warden.cli import _settings

    settings = _settings()
    if not settings.kafka_bootstrap:
        raise click.ClickException("set WARDEN_KAFKA_BOOTSTRAP: the embedded broker keeps nothing between runs")
    outcomes = asyncio.run(replay(settings, KafkaAccess.from_settings(settings),
                                  group=group or f"{settings.app_id}.dlq-replay",
                                  reasons=frozenset(reasons), idle_s=idle_s, dry_run=dry_run))
    for outcome in outcomes:
        click.echo(json.dumps(asdict(outcome)))
    replayed = sum(o.action == "replayed" for o in outcomes)
    click.echo(json.dumps({"read": len(outcomes), "replayed": replayed, "skipped": len(outcomes) - replayed,
                           "dry_run": dry_run}))
