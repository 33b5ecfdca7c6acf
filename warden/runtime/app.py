"""The faust app: thin agents around the pure stages (decode → detect → respond), with retry and DLQ; each activity
message is judged once per worker (see warden.runtime.state_rebuild for how detector state follows partitions)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP, EventT

from responders.base import Responder
from streams.detectors import DetectorState, detect
from streams.ingest import FORMATS, Decoded, Decoder
from warden.contract import metrics
from warden.contract.containment import QuarantineMark
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.contract.redact import redact_text
from warden.kit.retry import Backoff
from warden.kit.sealing import SCHEME, Sealer
from warden.runtime.otlp_shell import build_otlp_shell, tick_interval
from warden.runtime.policy_holder import PolicyHolder
from warden.runtime.settings import Settings
from warden.runtime.state_rebuild import PartitionStates
from warden.runtime.topics import DLQ_HEADER_ROOM

log = logging.getLogger("warden.worker")

Publish = Callable[[Finding], Awaitable[None]]
PublishBytes = Callable[[bytes, bytes], Awaitable[None]]  # a finding already serialised: key, value
PROCESSING = Backoff(initial_s=0.2, attempts=3)  # a failing message: retried, then dead-lettered
DLQ_WRITE = Backoff(initial_s=0.2, max_s=30.0)  # the DLQ is the last resort: retried until it works


def sealed_dead_letter(sealer: Sealer, value: bytes | None, max_bytes: int) -> tuple[bytes | None, dict[str, bytes]]:
    """A dead letter's value and headers: the original bytes sealed whole (they may carry `credential.token` or any
    other secret, and a message that did not parse has no parts to pick out), cut first so that the sealed value
    fits in `max_bytes` (Fernet adds a third plus 73 bytes). `warden dlq replay` opens it again."""
    if value is None:
        return None, {}
    headers = {"warden.sealed": SCHEME}  # opened again by `warden dlq replay`
    room = (max_bytes * 3) // 4 - 128
    if len(value) > room:
        headers["warden.truncated_from"] = str(len(value)).encode()
        value = value[:room]
    return sealer.seal_bytes(value), headers


def build_app(settings: Settings, bootstrap: str, holder: PolicyHolder, responder: Responder, *,
              quarantined: Mapping[str, QuarantineMark] | None = None,
              sealer: Sealer | None = None) -> tuple[faust.App, Publish]:
    """Wire the topics and agents; returns the app and how to publish a finding Warden makes itself (a rejected
    policy). All logic lives in ingest/detectors/responders; this only moves bytes."""
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir / "faust"),  # faust writes here, never into the current directory
        web_enabled=False,  # Warden's own HTTP server serves metrics and callbacks (warden.runtime.web)
        web_tables_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # topics are created by warden.runtime.topics with explicit settings
        # No leader election (Warden has no leader-only work): faust's "<app id>-__assignor-__leader" topic
        # otherwise relies on broker auto-creation, which production Kafka usually turns off.
        topic_disable_leader=True,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_commit_interval=1.0,
        stream_wait_empty=True,
        # Batch messages are ~100 KB: faust's 1 MB fetch default starves the agent (9k → 31k events/s in bench/).
        consumer_max_fetch_size=max(8 * 1024 * 1024, 2 * settings.max_message_bytes),
        broker_max_poll_records=5000,
        producer_acks=-1,
        producer_max_request_size=settings.dlq_max_bytes + DLQ_HEADER_ROOM,
    )
    def raw_topic(name: str) -> faust.TopicT:
        """Bytes in and out: Warden decodes values itself, so a poison message is a DLQ decision, not a crash."""
        return app.topic(name, value_type=bytes, value_serializer="raw", key_type=bytes, key_serializer="raw")

    activity = raw_topic(settings.topic_activity)
    findings_topic = raw_topic(settings.topic_findings)
    dlq = raw_topic(settings.topic_dlq)
    decode = FORMATS["native"]

    dlq_sealer = sealer or settings.sealer()  # dead letters are always sealed, whoever built the app

    async def dead_letter(event: EventT[bytes], reason_code: str, reason: str, index: int | None = None) -> None:
        """Forward the original bytes, sealed, with the reason and source coordinates as headers."""
        msg = event.message
        value, headers = sealed_dead_letter(dlq_sealer, msg.value, settings.dlq_max_bytes)
        headers.update({
            "warden.reason_code": reason_code.encode(),
            "warden.reason": redact_text(reason, 4096).encode("utf-8", "replace")[:4096],
            "warden.source_topic": msg.topic.encode(),
            "warden.source_partition": str(msg.partition).encode(),
            "warden.source_offset": str(msg.offset).encode(),
        })
        if index is not None:
            headers["warden.batch_index"] = str(index).encode()
        await send_with_backoff(lambda: dlq.send(key=msg.key, value=value, headers=headers))
        metrics.INVALID.labels(reason=reason_code).inc()

    async def publish(finding: Finding) -> None:
        await publish_bytes(finding.agent_id.encode(), finding.model_dump_json().encode())

    async def publish_bytes(key: bytes, value: bytes) -> None:
        await findings_topic.send(key=key, value=value)

    # Detector state per activity partition, rebuilt from the log the first time a partition is seen here.
    states = PartitionStates(bootstrap, decode, settings.max_message_bytes, lambda: holder.current,
                             quarantined=quarantined)
    ingest_one = _Judge(settings, holder=holder, decode=decode, states=states, publish=publish_bytes,
                        dead_letter=dead_letter, sealer=sealer)
    # mode types a handler's `signal` keyword as the string "BaseSignalT", which no handler's annotation can match
    app.on_partitions_revoked.connect(ingest_one.on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(ingest_one.on_assigned)  # type: ignore[arg-type]
    # OTLP spans from the Collector: the same judging, with late agent identity (warden.runtime.otlp_shell).
    otlp = build_otlp_shell(settings, bootstrap, holder, publish=publish_bytes, dead_letter=dead_letter,
                            quarantined=quarantined)
    app.on_partitions_revoked.connect(otlp.on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(otlp.on_assigned)  # type: ignore[arg-type]

    async def respond_one(event: EventT[bytes]) -> None:
        try:
            finding = Finding.model_validate_json(event.value)
        except ValueError as exc:
            await dead_letter(event, "invalid_finding", str(exc)[:500])
            return
        await responder.handle(finding)
        metrics.RESPONDED.inc()

    @app.agent(activity, name="warden.ingest")
    async def ingest_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await with_retries(event, ingest_one, dead_letter)

    @app.agent(raw_topic(settings.topic_otlp), name="warden.otlp")
    async def otlp_agent(stream: faust.StreamT[bytes]) -> None:
        # acked by the shell once none of its spans is held (StreamT does not declare noack; Stream has it)
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            await with_retries(event, otlp.on_message, dead_letter)
            otlp.settle(event)

    @app.timer(interval=tick_interval(settings), name="warden.otlp.release")  # type: ignore[untyped-decorator]
    async def release_held_spans() -> None:
        await otlp.tick()

    @app.agent(findings_topic, name="warden.respond")
    async def respond_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await with_retries(event, respond_one, dead_letter)

    @app.service
    class ResponderService(faust.Service):  # the responder's lifecycle follows the worker's
        async def on_start(self) -> None:
            await responder.start()

        async def on_stop(self) -> None:
            await responder.stop()

    return app, publish


class _Judge:
    """The ingest stage's shell: each activity message judged once by this worker. Its events are applied to its
    partition's detector state and their findings published; a message applied already (a rebalance re-delivers a
    kept partition from its committed offset) is skipped, its findings having been published then.

    Each event stands alone: one whose detection or finding cannot be made (a pure step, so trying again would
    fail again) is dead-lettered by its batch index and the others go on. Only publishing is retried, and an
    event is counted once, however often its message is tried."""

    def __init__(self, settings: Settings, *, holder: PolicyHolder, decode: Decoder, states: PartitionStates,
                 publish: PublishBytes, dead_letter: Callable[..., Awaitable[None]],
                 sealer: Sealer | None = None) -> None:
        self._settings = settings
        self._sealer = sealer
        self._holder = holder
        self._states = states
        self._publish = publish
        self._dead_letter = dead_letter
        self._decode = decode
        # The message being judged. Its offset is marked applied before it is judged, so a retry (a publish
        # failed) resumes here rather than being skipped as a replay.
        self._key: tuple[str, int, int] | None = None
        self._state = DetectorState()
        self._unsent: deque[tuple[Finding, bytes]] | None = None  # None: not judged (yet, or judging raised)

    async def __call__(self, event: EventT[bytes]) -> None:
        started = time.perf_counter()
        msg = event.message
        key = (msg.topic, msg.partition, msg.offset)
        first_attempt = key != self._key or (self._unsent is not None and not self._unsent)
        if first_attempt:
            state = self._states.current(msg.topic, msg.partition, msg.offset)
            if state is None:  # first seen here since start or assignment: rebuild it from the log first
                state = await self._states.rebuild(msg.topic, msg.partition, msg.offset, msg.timestamp)
            if not state.first_time(msg.topic, msg.partition, msg.offset):
                metrics.REPLAYED.inc()
                return
            self._key, self._state, self._unsent = key, state, None
        if self._unsent is None:  # not judged yet, or judging raised: again (windows count an event id once)
            decoded = self._decode(event.value, self._settings.max_message_bytes)
            if first_attempt:
                for rejection in decoded.rejections:
                    await self._dead_letter(event, rejection.code, rejection.reason, rejection.index)
                for ev in decoded.events:
                    metrics.EVENTS.labels(kind=ev.kind.value).inc()
            self._unsent = await self._judge(event, decoded, dead_letter=first_attempt)
        unsent = self._unsent
        while unsent:
            finding, value = unsent[0]
            await self._publish(finding.agent_id.encode(), value)
            unsent.popleft()
            metrics.FINDINGS.labels(rule=finding.rule, severity=finding.severity.value,
                                    shadow=str(finding.shadow).lower()).inc()
            metrics.DETECTION_SECONDS.observe(max(0.0, (datetime.now(UTC) - finding.ts).total_seconds()))
        metrics.DETECT_SECONDS.observe(time.perf_counter() - started)

    async def _judge(self, event: EventT[bytes], decoded: Decoded, *, dead_letter: bool) -> deque[tuple[Finding,
                                                                                                          bytes]]:
        """Every event's findings, serialised; an event that fails here is dead-lettered alone by its index."""
        policy = self._holder.current
        out: deque[tuple[Finding, bytes]] = deque()
        for position, ev in enumerate(decoded.events):
            try:
                made = self._seal(detect(ev, policy, self._state), ev)
                findings = [(f, f.model_dump_json().encode()) for f in made]
            except Exception as exc:  # noqa: BLE001 - a pure step failed on this event: it alone is dead-lettered
                log.error("cannot judge event %d of %s[%s]@%s: %s", position, event.message.topic,
                          event.message.partition, event.message.offset, type(exc).__name__)
                if dead_letter:
                    await self._dead_letter(event, "processing_error", f"{type(exc).__name__}: {exc}"[:500],
                                            decoded.index_of(position))
                continue
            out.extend(findings)
        return out

    def _seal(self, findings: list[Finding], event: ActivityEvent) -> list[Finding]:
        """A finding whose playbooks may revoke the event's token carries it sealed (never in clear on a topic)."""
        cred = event.credential
        if self._sealer is None or cred is None or cred.token is None:
            return findings
        token = cred.token.get_secret_value()
        return [f.model_copy(update={"credential": f.credential.model_copy(update={
                    "sealed_token": self._sealer.seal(token)})})
                if f.credential is not None else f for f in findings]

    def on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """faust's signal: a rebalance starts (every partition is revoked; some will come back)."""
        self._states.on_revoked()

    def on_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """faust's signal: the new assignment; the state of an activity partition that moved away is dropped."""
        assigned: set[TP] = args[0]
        topic = self._settings.topic_activity
        self._states.on_assigned((tp.topic, tp.partition) for tp in assigned if tp.topic == topic)


async def with_retries(
    event: EventT[bytes],
    handle: Callable[[EventT[bytes]], Awaitable[None]],
    dead_letter: Callable[..., Awaitable[None]],
) -> None:
    """faust acks a message whose handler raised, so never let one raise: retry, then dead-letter."""
    try:
        await PROCESSING.call(lambda: handle(event), lambda attempt, exc: metrics.PROCESSING_RETRIES.inc())
    except Exception as exc:  # noqa: BLE001 - any failure must end in the DLQ, never a silent ack
        log.error("giving up on %s[%s]@%s after %d attempts: %s", event.message.topic,
                  event.message.partition, event.message.offset, PROCESSING.attempts, type(exc).__name__)
        await dead_letter(event, "processing_error", f"{type(exc).__name__}: {exc}"[:500])


async def send_with_backoff(send: Callable[[], Awaitable[object]]) -> None:
    """The DLQ is the last resort: keep trying (blocking this partition) rather than ack and lose a message."""

    def failed(attempt: int, exc: Exception) -> None:
        log.error("cannot write to the DLQ (%s: %s); retrying in %.1fs", type(exc).__name__, exc,
                  DLQ_WRITE.delay(attempt))

    await DLQ_WRITE.call(send, failed)
