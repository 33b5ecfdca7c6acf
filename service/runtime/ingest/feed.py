"""What one batch reads: its limits, a fetch's records then what the consumer buffered since while the batch has
room, and where reading starts again (the committed offsets) or where a key's messages go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

log = logging.getLogger("warden.ingest")


@dataclass(frozen=True)
class BatchLimits:
    """How much one batch may hold. Bounded in events, not messages: 2,000 batch-100 messages are 200k events,
    seconds of work, longer than a rebalance may wait for the batch in flight."""

    max_events: int = 5_000  # judged between two commits
    commit_every_s: float = 0.2  # a commit at least this often while events come in; at once when they stop
    max_records: int = 500  # messages per fetch: 500 batch messages of ~100 KB are 50 MB held at once
    yield_every: int = 500  # events between yields to the event loop (heartbeats, web, the findings agent)
    fetch_wait_ms: int = 10  # the broker's longest wait for data: the latency floor at low load (faust's: 1.5 s)


class Feed:
    """The records of one fetch and then, while a batch has room, what the consumer has buffered since: a fetch
    returns at most `max_records` messages, a batch is bounded in events (500 single-event messages are only 500)."""

    def __init__(self, consumer: AIOKafkaConsumer, fetched: Mapping[TopicPartition, list[ConsumerRecord]],
                 max_records: int, generation: int) -> None:
        self._consumer = consumer
        self._records = _records(fetched)
        self._max_records = max_records
        self.generation = generation  # the worker's assignment count at the first fetch

    async def next(self) -> ConsumerRecord | None:
        """The next record, or None when neither the fetch nor the consumer's buffer holds one more."""
        record = next(self._records, None)
        if record is not None:
            return record
        try:  # no wait: only what is buffered already
            fetched = await self._consumer.getmany(timeout_ms=0, max_records=self._max_records)
        except KafkaError:
            return None
        self._records = _records(fetched)
        return next(self._records, None)


def _records(fetched: Mapping[TopicPartition, list[ConsumerRecord]]) -> Iterator[ConsumerRecord]:
    for records in fetched.values():
        yield from records



async def fetch(consumer: AIOKafkaConsumer, wait_ms: int, max_records: int
                ) -> Mapping[TopicPartition, list[ConsumerRecord]] | None:
    """One fetch, waiting up to `wait_ms` for data; None (after a pause) when it failed: the caller fetches again."""
    try:
        fetched: Mapping[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(timeout_ms=wait_ms,
                                                                                       max_records=max_records)
    except KafkaError as exc:
        log.warning("fetch failed (%s: %s); fetching again", type(exc).__name__, exc)
        await asyncio.sleep(0.5)
        return None
    return fetched


async def rewind(consumer: AIOKafkaConsumer, stopping: Callable[[], bool]) -> None:
    """Seek every owned partition back to its committed offset (the beginning where none is), retrying until the
    broker answers or the worker stops."""
    while not stopping():
        try:
            for tp in consumer.assignment():
                committed = await consumer.committed(tp)
                if committed is None:  # nothing committed yet: the group starts at the beginning (earliest)
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)
            return
        except KafkaError as exc:
            log.warning("cannot go back to the committed offsets (%s); retrying", type(exc).__name__)
            await asyncio.sleep(0.5)


def default_partition(key: str, partitions: Collection[int]) -> int:
    """The partition producers' default partitioner (murmur2 of the key) picks among `partitions` (-1: none)."""
    if not partitions:
        return -1
    index: int = (murmur2(key.encode()) & 0x7FFFFFFF) % len(partitions)
    return sorted(partitions)[index]
