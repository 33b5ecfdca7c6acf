"""The faust app: the lifecycle, sensors and the findings → responder agent, and the host of the batch ingest
(service.runtime.ingest), which consumes the input topics itself: faust's per-message cost is too high there."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import faust
from faust.types import EventT

from responders.base import Responder
from service.runtime.faust_parts import NoTablesManager, use_consumer
from service.runtime.ingest import BatchIngest, BatchJudge, BatchLimits, dead_letter_record
from service.runtime.inputs import InputHandler, NativeInput, SpanInput
from service.runtime.kafka_access import KafkaAccess, access
from service.runtime.policy_holder import PolicyHolder
from service.runtime.settings import Settings
from service.runtime.state_rebuild import PartitionStates
from service.runtime.topics import DLQ_HEADER_ROOM
from streams.ingest import FORMATS, Decoder
from streams.ingest.otlp import OtlpIngest, replay_decoder
from streams.ingest.otlp_agents import AgentResolver, Bounds
from streams.ingest.otlp_logs import LogIngest
from streams.ingest.otlp_logs import replay_decoder as log_replay_decoder
from warden.contract.containment import QuarantineMark
from warden.contract.findings import Finding
from warden.kit.retry import Backoff
from warden.kit.sealing import Sealer
from warden.telemetry import metrics

log = logging.getLogger("warden.worker")

Publish = Callable[[Finding], Awaitable[None]]
PROCESSING = Backoff(initial_s=0.2, attempts=3)  # a failing finding: retried, then dead-lettered
DLQ_WRITE = Backoff(initial_s=0.2, max_s=30.0)  # the DLQ is the last resort: retried until it works


def build_app(settings: Settings, kafka: KafkaAccess | str, holder: PolicyHolder, responder: Responder, *,
              quarantined: Mapping[str, QuarantineMark] | None = None,
              sealer: Sealer | None = None,
              limits: BatchLimits | None = None) -> tuple[faust.App, Publish, BatchIngest]:
    """Wire the topics, the agent and the ingest; returns the app, how to publish a finding Warden makes itself (a
    rejected policy) and the ingest, which the caller starts alongside the app (its group join and the app's run at
    the same time: each takes the broker's initial rebalance delay, ~3 s). All logic lives in
    ingest/detectors/responders; this moves bytes."""
    kafka = access(kafka)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{kafka.bootstrap}",
        broker_credentials=kafka.faust_credentials(),  # the same TLS/SASL as every other client
        store="memory://",
        datadir=str(settings.data_dir / "faust"),  # faust writes here, never into the current directory
        web_enabled=False,  # Warden's own HTTP server serves metrics and callbacks (service.runtime.web)
        web_tables_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # topics are created by service.runtime.topics with explicit settings
        # No leader election (Warden has no leader-only work): faust's "<app id>-__assignor-__leader" topic
        # otherwise relies on broker auto-creation, which production Kafka usually turns off.
        topic_disable_leader=True,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        consumer_group_instance_id=settings.kafka_group_instance_id,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",  # where a partition with nothing committed starts (faust_parts too)
        stream_wait_empty=True,
        consumer_max_fetch_size=max(8 * 1024 * 1024, 2 * settings.max_message_bytes),
        broker_max_poll_records=5000,
        producer_acks=-1,
        producer_max_request_size=settings.dlq_max_bytes + DLQ_HEADER_ROOM,
        TableManager=NoTablesManager,
    )
    # The findings agent waits for data no longer than the batch ingest does: faust's own 1.5 s is the latency
    # floor of every alert on a broker that holds a fetch for its whole wait.
    use_consumer(app, (limits or BatchLimits()).fetch_wait_ms)

    def raw_topic(name: str) -> faust.TopicT:
        """Bytes in and out: Warden decodes values itself, so a poison message is a DLQ decision, not a crash."""
        return app.topic(name, value_type=bytes, value_serializer="raw", key_type=bytes, key_serializer="raw")

    findings_topic = raw_topic(settings.topic_findings)
    dlq = raw_topic(settings.topic_dlq)
    dlq_sealer = sealer or settings.sealer()  # dead letters are always sealed, whoever built the app

    async def dead_letter(event: EventT[bytes], reason_code: str, reason: str) -> None:
        """Forward a finding that cannot be read, sealed, with the reason and source coordinates as headers."""
        msg = event.message
        record = dead_letter_record(settings, dlq_sealer, topic=msg.topic, partition=msg.partition,
                                    offset=msg.offset, key=msg.key, value=msg.value, reason_code=reason_code,
                                    reason=reason)
        await send_with_backoff(lambda: dlq.send(key=record.key, value=record.value, headers=record.headers))
        metrics.INVALID.labels(reason=reason_code).inc()

    async def publish(finding: Finding) -> None:
        await findings_topic.send(key=finding.agent_id.encode(), value=finding.model_dump_json().encode())

    # The input topics: how each is read, and how its log is replayed to rebuild detector state. A new input topic =
    # one line in each mapping (and its topic in Settings).
    # OTLP spans from the Collector (WARDEN_TOPIC_OTLP) are judged like activity, with late agent identity: their
    # handler holds a span until an ancestor names its agent, and the commit stays below it.
    # GenAI events on the logs signal (WARDEN_TOPIC_OTLP_LOGS) wait in the same resolver for the span they were
    # emitted in, which names their agent (streams/ingest/otlp_logs.py).
    replay: dict[str, Decoder] = {
        settings.topic_activity: FORMATS["native"],
        settings.topic_otlp: replay_decoder(settings.otlp_encoding, lambda: holder.current),
        settings.topic_otlp_logs: log_replay_decoder(settings.otlp_encoding, lambda: holder.current),
    }
    resolver = AgentResolver(Bounds(wait_s=settings.otlp_wait_s, max_spans=settings.otlp_max_spans))
    inputs: dict[str, InputHandler] = {
        settings.topic_activity: NativeInput(FORMATS["native"], settings.max_message_bytes),
        settings.topic_otlp: SpanInput(settings.topic_otlp, OtlpIngest(
            settings.otlp_encoding, max_bytes=settings.max_message_bytes, resolver=resolver), settings.otlp_wait_s),
        settings.topic_otlp_logs: SpanInput(settings.topic_otlp_logs, LogIngest(
            resolver, settings.otlp_encoding, max_bytes=settings.max_message_bytes), settings.otlp_wait_s,
            partition_option="partition_logs_by_trace_id"),
    }
    # Detector state per input partition, rebuilt from the log the first time a partition is seen here.
    states = {topic: PartitionStates(kafka, decode, settings.max_message_bytes, lambda: holder.current,
                                     quarantined=quarantined) for topic, decode in replay.items()}
    judge = BatchJudge(settings, holder, inputs, states, sealer=sealer, dlq_sealer=dlq_sealer)
    ingest = BatchIngest(settings, kafka, judge, limits)

    async def respond_one(event: EventT[bytes]) -> None:
        try:
            finding = Finding.model_validate_json(event.value)
        except ValueError as exc:
            await dead_letter(event, "invalid_finding", str(exc)[:500])
            return
        await responder.handle(finding)
        metrics.RESPONDED.inc()

    @app.agent(findings_topic, name="warden.respond")
    async def respond_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await with_retries(event, respond_one, dead_letter)

    return app, publish, ingest


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
