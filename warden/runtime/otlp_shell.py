"""The span topic's faust shell: moves Collector messages through `streams.ingest.otlp.OtlpIngest` into detection.

All OTLP logic is in the pure ingest module; this only acknowledges a partition's messages in offset order up to
the first one with a span still held (so faust never commits past a held span, and a crash re-delivers it instead
of losing it), releases held spans on a timer, and judges every batch on its partition's detector state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from faust.types import TP, EventT

from streams.detectors import detect
from streams.ingest.otlp import Batch, OtlpIngest, replay_decoder
from streams.ingest.otlp_agents import Bounds
from warden.contract import metrics
from warden.contract.containment import QuarantineMark
from warden.contract.findings import Finding
from warden.runtime.policy_holder import PolicyHolder
from warden.runtime.settings import Settings
from warden.runtime.state_rebuild import PartitionStates

log = logging.getLogger("warden.otlp")

PublishBytes = Callable[[bytes, bytes], Awaitable[None]]
DeadLetter = Callable[..., Awaitable[None]]


class OtlpShell:
    """One per worker: the `warden.otlp` agent calls `on_message` then `settle`; a timer calls `tick`."""

    def __init__(self, topic: str, ingest: OtlpIngest, *, holder: PolicyHolder, states: PartitionStates,
                 publish: PublishBytes, dead_letter: DeadLetter, clock: Callable[[], float] = time.monotonic) -> None:
        self._topic = topic
        self._ingest = ingest
        self._holder = holder
        self._states = states
        self._publish = publish
        self._dead_letter = dead_letter
        self._clock = clock
        self._lock = asyncio.Lock()  # the agent and the timer take turns on the resolver
        # Messages not acknowledged yet, by partition, in offset order: those with spans held and those after them.
        self._pending: dict[int, dict[int, EventT[bytes]]] = {}
        self._taken: tuple[int, int] | None = None  # the message last taken (a retry does not take it twice)
        self._in_hand: tuple[int, int] | None = None  # the message the agent is handling: settled by the agent
        self._todo: list[tuple[Finding, bytes]] = []  # findings not yet published
        self._warned_unkeyed = False

    async def on_message(self, event: EventT[bytes]) -> None:
        """Take one message (once, even when retried) and publish what it resolved."""
        msg = event.message
        key = (msg.partition, msg.offset)
        self._in_hand = key
        async with self._lock:
            if self._taken != key:
                self._taken = key
                self._remember(event)
                state = self._states.current(msg.topic, msg.partition, msg.offset)
                if state is None:
                    state = await self._states.rebuild(msg.topic, msg.partition, msg.offset, msg.timestamp)
                # Remembered as applied, so a partition kept through a rebalance is not rebuilt needlessly. A message
                # delivered again is still taken: its spans may have been held (windows count an event id once).
                state.first_time(msg.topic, msg.partition, msg.offset)
                batches = self._ingest.take(msg.value, key=msg.key, partition=msg.partition, offset=msg.offset,
                                            now=self._clock(), policy=self._holder.current)
                if self._ingest.unkeyed_messages and not self._warned_unkeyed:
                    self._warned_unkeyed = True
                    log.warning("%s holds messages with no key: the Collector's kafka exporter runs with "
                                "partition_traces_by_id off, so a trace's spans may land on different partitions "
                                "and some agents stay unresolved; set it to true", self._topic)
                self._todo.extend(await self._judge(batches))
            await self._flush()

    def settle(self, event: EventT[bytes]) -> None:
        """After handling (or dead-lettering) a message: acknowledge what may be, in offset order."""
        msg = event.message
        self._in_hand = None
        self._acknowledge(msg.partition)
        if msg.offset in self._pending.get(msg.partition, {}):
            # Not acknowledged: faust waits for every unacknowledged message before a rebalance or a stop goes on,
            # and must not wait for a hold; it leaves faust's wait set (faust's own, no public way) and is acked
            # once released. faust commits acknowledged offsets only.
            unacked = getattr(event.app.consumer, "_unacked_messages", None)
            if unacked is not None:
                unacked.discard(msg)
        metrics.OTLP_HELD_SPANS.set(self._ingest.resolver.held)

    async def tick(self) -> None:
        """Release spans whose wait is over (as events of an unresolved agent) and acknowledge freed messages."""
        async with self._lock:
            self._todo.extend(await self._judge(self._ingest.release(self._clock(), self._holder.current)))
            await self._flush()
            for partition in list(self._pending):
                self._acknowledge(partition)
        metrics.OTLP_HELD_SPANS.set(self._ingest.resolver.held)

    def _remember(self, event: EventT[bytes]) -> None:
        """Pending in offset order (a message delivered again after a rebalance may come below the last one)."""
        msg = event.message
        waiting = self._pending.setdefault(msg.partition, {})
        last = next(reversed(waiting), None)
        waiting[msg.offset] = event
        if last is not None and msg.offset < last:
            self._pending[msg.partition] = dict(sorted(waiting.items()))

    def _acknowledge(self, partition: int) -> None:
        """Ack the partition's pending messages from its lowest offset up to the first one still held (or still in
        the agent's hands). In order, because faust's commit does not stop at an unacknowledged message at the
        committed position (its gap check is off by one, and skipped before a partition's first commit): only an
        ack-free head keeps it from committing past a held span."""
        waiting = self._pending.get(partition, {})
        while waiting:
            offset = next(iter(waiting))
            if (partition, offset) == self._in_hand or self._ingest.holds(partition, offset):
                return
            waiting.pop(offset).ack()

    async def _judge(self, batches: list[Batch]) -> list[tuple[Finding, bytes]]:
        policy = self._holder.current
        out: list[tuple[Finding, bytes]] = []
        for batch in batches:
            source = self._pending.get(batch.partition, {}).get(batch.offset)
            decoded = batch.decoded
            for rejection in decoded.rejections:
                if source is not None:
                    await self._dead_letter(source, rejection.code, rejection.reason, rejection.index)
            state = self._states.current(self._topic, batch.partition, batch.offset)
            if state is None:  # the partition moved away meanwhile: its next owner judges these spans again
                continue
            for position, ev in enumerate(decoded.events):
                metrics.EVENTS.labels(kind=ev.kind.value).inc()
                try:
                    out.extend((f, f.model_dump_json().encode()) for f in detect(ev, policy, state))
                except Exception as exc:  # noqa: BLE001 - a pure step failed on this event: it alone is dead-lettered
                    log.error("cannot judge span %s of %s[%s]@%s: %s", decoded.index_of(position), self._topic,
                              batch.partition, batch.offset, type(exc).__name__)
                    if source is not None:
                        await self._dead_letter(source, "processing_error", f"{type(exc).__name__}: {exc}"[:500],
                                                decoded.index_of(position))
        return out

    async def _flush(self) -> None:
        while self._todo:
            finding, value = self._todo[0]
            await self._publish(finding.agent_id.encode(), value)
            self._todo.pop(0)
            metrics.FINDINGS.labels(rule=finding.rule, severity=finding.severity.value,
                                    shadow=str(finding.shadow).lower()).inc()
            metrics.DETECTION_SECONDS.observe(max(0.0, (datetime.now(UTC) - finding.ts).total_seconds()))

    def on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """faust's signal: a rebalance starts. Held spans stay until the new assignment says where they belong."""
        self._taken = None
        self._states.on_revoked()

    def on_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """The new assignment: the held spans and pending messages of partitions that moved away are dropped here.
        Their messages were never committed, so the next owner is delivered them again and holds them itself."""
        assigned: set[TP] = args[0]
        mine = {tp.partition for tp in assigned if tp.topic == self._topic}
        gone = {p for p in self._pending if p not in mine}
        dropped = self._ingest.forget_partitions(gone)
        for partition in gone:
            del self._pending[partition]
        if dropped:
            log.info("%d held spans of %s partitions %s dropped here: their messages go to the partitions' new "
                     "owners again", dropped, self._topic, sorted(gone))
        self._states.on_assigned((self._topic, p) for p in mine)


def build_otlp_shell(settings: Settings, bootstrap: str, holder: PolicyHolder, *, publish: PublishBytes,
                     dead_letter: DeadLetter, quarantined: Mapping[str, QuarantineMark] | None = None) -> OtlpShell:
    """The shell with its own detector states (rebuilt from the span topic, ancestry not replayed)."""
    ingest = OtlpIngest(settings.otlp_encoding, Bounds(wait_s=settings.otlp_wait_s, max_spans=settings.otlp_max_spans),
                        max_bytes=settings.max_message_bytes)
    states = PartitionStates(bootstrap, replay_decoder(settings.otlp_encoding, lambda: holder.current),
                             settings.max_message_bytes, lambda: holder.current, quarantined=quarantined)
    return OtlpShell(settings.topic_otlp, ingest, holder=holder, states=states, publish=publish,
                     dead_letter=dead_letter)


def tick_interval(settings: Settings) -> float:
    """How often held spans are checked: a quarter of the wait, between 0.1 s and 1 s."""
    return max(0.1, min(1.0, settings.otlp_wait_s / 4))
