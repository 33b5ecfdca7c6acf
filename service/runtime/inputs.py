"""The batch ingest's input handlers: how one input topic's messages become batches of events to judge. A
stateless format (the native one) turns each message into its own batch; a holding one (OTLP spans, whose agent may
be named by a span exported later) keeps some back and releases them later, and caps the commit below them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from aiokafka.structs import ConsumerRecord

from streams.ingest import Decoder
from streams.ingest.otlp import Batch
from streams.ingest.otlp_agents import AgentResolver
from warden.policy import Policy
from warden.telemetry import metrics

log = logging.getLogger("warden.ingest")

__all__ = ["Batch", "HoldingIngest", "InputHandler", "NativeInput", "SpanInput"]


class HoldingIngest(Protocol):
    """An OTLP ingest that may hold events until their agent is known: spans (`streams.ingest.otlp.OtlpIngest`) and
    GenAI log records (`streams.ingest.otlp_logs.LogIngest`), which share one resolver."""

    resolver: AgentResolver
    unkeyed_messages: int

    def take(self, value: bytes | None, *, key: bytes | None, partition: int, offset: int, now: float,
             policy: Policy) -> list[Batch]: ...

    def release(self, now: float, policy: Policy) -> list[Batch]: ...

    def lowest_held(self, partition: int) -> int | None: ...

    def holds(self, partition: int, offset: int) -> bool: ...

    def forget_partitions(self, partitions: Iterable[int]) -> int: ...


class InputHandler(Protocol):
    """One input topic's part of the batch ingest (service.runtime.ingest)."""

    retakes: bool  # a message delivered again is taken again (a holding input may have dropped its held events)
    release_every: float | None  # seconds between `release` calls; None: it never holds anything

    def take(self, record: ConsumerRecord, policy: Policy) -> list[Batch]:
        """One message in: its own batch first, then any earlier messages' events it released."""
        ...

    def release(self, policy: Policy) -> list[Batch]:
        """Held events whose wait is over."""
        ...

    def lowest_held(self, partition: int) -> int | None:
        """The lowest offset of `partition` with something held: the commit stays below it."""
        ...

    def source(self, partition: int, offset: int) -> ConsumerRecord | None:
        """The held message at that offset (its dead letters carry its bytes)."""
        ...

    def settled(self) -> None:
        """The batches last returned are judged: the messages with nothing held any more are let go."""
        ...

    def forget(self, partitions: Iterable[int]) -> None:
        """The partitions are revoked: drop what is held from them (their messages were not committed)."""
        ...


class NativeInput:
    """A stateless format: every message is one batch, judged at once."""

    retakes = False
    release_every: float | None = None

    def __init__(self, decode: Decoder, max_bytes: int) -> None:
        self._decode = decode
        self._max_bytes = max_bytes

    def take(self, record: ConsumerRecord, policy: Policy) -> list[Batch]:
        return [Batch(record.partition, record.offset, self._decode(record.value, self._max_bytes))]

    def release(self, policy: Policy) -> list[Batch]:
        return []

    def lowest_held(self, partition: int) -> int | None:
        return None

    def source(self, partition: int, offset: int) -> ConsumerRecord | None:
        return None

    def settled(self) -> None:
        return None

    def forget(self, partitions: Iterable[int]) -> None:
        return None


class SpanInput:
    """The span topic (or the log topic): `streams.ingest.otlp.OtlpIngest` (`otlp_logs.LogIngest`) behind the
    handler interface; keeps the messages whose spans are held, so a later batch of theirs is dead-lettered against
    its own bytes."""

    retakes = True

    def __init__(self, topic: str, ingest: HoldingIngest, wait_s: float,
                 clock: Callable[[], float] = time.monotonic, partition_option: str = "partition_traces_by_id") -> None:
        self._topic = topic
        self._option = partition_option  # the exporter's setting that keys this topic's messages by trace id
        self._ingest = ingest
        self._clock = clock
        self.release_every: float | None = max(0.1, min(1.0, wait_s / 4))  # a quarter of the wait, 0.1 s to 1 s
        self._sources: dict[tuple[int, int], ConsumerRecord] = {}
        self._warned_unkeyed = False

    def take(self, record: ConsumerRecord, policy: Policy) -> list[Batch]:
        p, o = record.partition, record.offset
        batches = self._ingest.take(record.value, key=record.key, partition=p, offset=o, now=self._clock(),
                                    policy=policy)
        if self._ingest.holds(p, o):
            self._sources[(p, o)] = record
        if self._ingest.unkeyed_messages and not self._warned_unkeyed:
            self._warned_unkeyed = True
            log.warning("%s holds messages with no key: the Collector's kafka exporter runs with "
                        "%s off, so a trace's spans may land on different partitions and some "
                        "agents stay unresolved; set it to true", self._topic, self._option)
        metrics.OTLP_HELD_SPANS.set(self._ingest.resolver.held)
        return batches

    def release(self, policy: Policy) -> list[Batch]:
        batches = self._ingest.release(self._clock(), policy)
        metrics.OTLP_HELD_SPANS.set(self._ingest.resolver.held)
        return batches

    def lowest_held(self, partition: int) -> int | None:
        return self._ingest.lowest_held(partition)

    def source(self, partition: int, offset: int) -> ConsumerRecord | None:
        return self._sources.get((partition, offset))

    def settled(self) -> None:
        if len(self._sources) > 0:
            self._sources = {k: r for k, r in self._sources.items() if self._ingest.holds(*k)}

    def forget(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        dropped = self._ingest.forget_partitions(gone)
        self._sources = {k: r for k, r in self._sources.items() if k[0] not in gone}
        if dropped:
            log.info("%d held spans of %s partitions %s dropped: their messages are read again from the committed "
                     "offset", dropped, self._topic, sorted(gone))
        metrics.OTLP_HELD_SPANS.set(self._ingest.resolver.held)
