"""The ingest stage's shell around the pure core: one Kafka record in (decoded by its input's handler, judged on its
partition's rebuilt state), the findings and dead letters it makes out."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka.structs import ConsumerRecord

from service.runtime.ingest.dead_letters import Outgoing, dead_letter_record
from service.runtime.inputs import Batch, InputHandler
from service.runtime.policy_holder import PolicyHolder
from service.runtime.settings import Settings
from service.runtime.state_rebuild import PartitionStates
from streams.detectors import DetectorState, detect
from streams.ingest import Decoded
from warden.contract.events import ActivityEvent, Kind
from warden.contract.findings import Finding
from warden.kit.sealing import Sealer
from warden.telemetry import metrics

log = logging.getLogger("warden.ingest")

_EVENTS_BY_KIND = {kind: metrics.EVENTS.labels(kind=kind.value) for kind in Kind}  # a child per event costs 1.5 µs


class BatchJudge:
    """The ingest stage's shell around the pure core: one Kafka record in, the records it makes out.

    Each record is judged once by this worker: its partition's state says whether it was applied already (a
    rebalance re-delivers a kept partition from its committed offset), and a partition first seen here is rebuilt
    from the log first. Each event stands alone: one whose detection or finding cannot be made is dead-lettered by
    its batch index and the others go on."""

    def __init__(self, settings: Settings, holder: PolicyHolder, inputs: Mapping[str, InputHandler],
                 states: Mapping[str, PartitionStates], *, sealer: Sealer | None, dlq_sealer: Sealer) -> None:
        self._settings = settings
        self._holder = holder
        self.inputs = inputs
        self.states = states
        self._sealer = sealer
        self._dlq_sealer = dlq_sealer
        self._finding_topic = settings.topic_findings
        self._kinds: dict[Kind, int] = {}  # events judged by kind since `count_events`

    async def judge(self, record: ConsumerRecord, out: list[Outgoing]) -> int:
        """Append the record's findings and dead letters to `out`; returns the events it held (0 if a replay)."""
        topic, partition, offset = record.topic, record.partition, record.offset
        states = self.states[topic]
        handler = self.inputs[topic]
        state = states.current(topic, partition, offset)
        if state is None:  # first seen here since start or assignment: rebuild it from the log first
            state = await states.rebuild(topic, partition, offset, record.timestamp / 1000)
        if not state.first_time(topic, partition, offset) and not handler.retakes:
            metrics.REPLAYED.inc()
            return 0
        own, *earlier = handler.take(record, self._holder.current)
        events = self._judge_batch(record, own.decoded, state, out)
        if earlier:
            events += self.judge_released(topic, earlier, out)
        return events

    def release(self, out: list[Outgoing]) -> int:
        """Held events whose wait is over, of every holding input, judged into `out`; returns how many."""
        events = 0
        for topic, handler in self.inputs.items():
            if handler.release_every is not None:
                events += self.judge_released(topic, handler.release(self._holder.current), out)
        return events

    def judge_released(self, topic: str, batches: list[Batch], out: list[Outgoing]) -> int:
        """Earlier messages' events, each batch judged on its partition's state, dead-lettered against its source."""
        handler, states = self.inputs[topic], self.states[topic]
        events = 0
        for batch in batches:
            state = states.current(topic, batch.partition, batch.offset)
            if state is None:  # the partition moved away meanwhile: its next owner judges these events again
                continue
            source = handler.source(batch.partition, batch.offset)
            if source is None:  # not kept (it should be): its dead letters carry its coordinates only
                source = ConsumerRecord(topic, batch.partition, batch.offset, 0, 0, None, None, None, 0, 0, [])
            events += self._judge_batch(source, batch.decoded, state, out)
        handler.settled()
        return events

    def _judge_batch(self, record: ConsumerRecord, decoded: Decoded, state: DetectorState,
                     out: list[Outgoing]) -> int:
        for rejection in decoded.rejections:
            out.append(self._dead_letter(record, rejection.code, rejection.reason, rejection.index))
        self._judge_events(record, decoded, state, out)
        return len(decoded.events)

    def _judge_events(self, record: ConsumerRecord, decoded: Decoded, state: DetectorState,
                      out: list[Outgoing]) -> None:
        policy = self._holder.current
        kinds = self._kinds
        for position, ev in enumerate(decoded.events):
            kinds[ev.kind] = kinds.get(ev.kind, 0) + 1
            try:
                made = detect(ev, policy, state)
                if made:
                    out.extend(Outgoing(self._finding_topic, f.agent_id.encode(), f.model_dump_json().encode(),
                                        finding=f) for f in self._seal(made, ev))
            except Exception as exc:  # noqa: BLE001 - a pure step failed on this event: it alone is dead-lettered
                log.error("cannot judge event %d of %s[%s]@%s: %s", position, record.topic, record.partition,
                          record.offset, type(exc).__name__)
                out.append(self._dead_letter(record, "processing_error", f"{type(exc).__name__}: {exc}"[:500],
                                             decoded.index_of(position)))

    def count_events(self) -> None:
        """Add the events judged since the last call to `warden_events_total`: once per kind at each yield and at
        the end of a batch, not per message (a counter's inc takes a lock)."""
        for kind, n in self._kinds.items():
            _EVENTS_BY_KIND[kind].inc(n)
        self._kinds.clear()

    def dead_letter_whole(self, record: ConsumerRecord, exc: Exception) -> Outgoing:
        """A record whose judging failed outside any one event (a bug): the whole message to the DLQ."""
        return self._dead_letter(record, "processing_error", f"{type(exc).__name__}: {exc}"[:500], None)

    def _dead_letter(self, record: ConsumerRecord, code: str, reason: str, index: int | None) -> Outgoing:
        return dead_letter_record(self._settings, self._dlq_sealer, topic=record.topic, partition=record.partition,
                                  offset=record.offset, key=record.key, value=record.value, reason_code=code,
                                  reason=reason, index=index)

    def _seal(self, findings: list[Finding], event: ActivityEvent) -> list[Finding]:
        """A finding whose playbooks may revoke the event's token carries it sealed (never in clear on a topic)."""
        cred = event.credential
        if self._sealer is None or cred is None or cred.token is None:
            return findings
        token = cred.token.get_secret_value()
        return [f.model_copy(update={"credential": f.credential.model_copy(update={
                    "sealed_token": self._sealer.seal(token)})})
                if f.credential is not None else f for f in findings]
