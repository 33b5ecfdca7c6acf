"""Approval before action, wired: the Kafka transport (requests in, answers and approval events out), the HTTP
transport's routes, and the desk that records, routes, escalates and expires (responders.approvals).

Requests on WARDEN_TOPIC_APPROVAL_REQUESTS are read by a consumer group of their own (`<app id>.approvals`), each
judged by the pure stage (streams.verdict) against the live policy and recorded before its offset is committed;
a malformed one goes to WARDEN_TOPIC_APPROVAL_DLQ sealed, with the reason and the correlation id (when one can be
read) as headers, and the others go on. Answers go to WARDEN_TOPIC_APPROVAL_DECISIONS keyed by request id; a
decided approval also goes to the activity topic keyed by agent, where `unreviewed_identity_change` reads it.

The identity changes agents then make are put on the record they belong to (`action`, or `action_without_approval`
for a second use or a change after a denial or expiry) by a consumer of the activity topic in a group of its own
(`<app id>.approval-actions`, from the newest offset); it decodes only messages keyed by an agent that has a
decided request, so it costs the hot path a second fetch, not a second decode."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from responders.api import parse_tokens
from responders.api.approval_routes import ApprovalApi
from responders.approvals.desk import ApprovalDesk
from responders.base import RouteInstaller
from responders.incident_responder import IncidentResponder
from responders.notifiers.base import AsksApproval
from service.runtime.inputs import reading
from service.runtime.kafka_access import KafkaAccess, access
from service.runtime.policy_holder import PolicyHolder
from service.runtime.settings import Settings
from streams.detectors.base import Context
from streams.detectors.unreviewed_identity_change import identity_change_of
from streams.ingest import ACTIVITY
from streams.verdict import History, judge
from warden.contract.approval_requests import ApprovalAnswer, ApprovalRequest, Judgement
from warden.contract.containment import QuarantineMark
from warden.contract.events import ActivityEvent
from warden.contract.redact import redact_text
from warden.kit.retry import Backoff
from warden.kit.sealing import SCHEME
from warden.telemetry import metrics

log = logging.getLogger("warden.approvals")
TRANSPORT = "kafka"
RECORD = Backoff(initial_s=0.2, attempts=5)  # the database refused: tried again, then dead-lettered
SEND = Backoff(initial_s=0.2, max_s=30.0)  # a topic write: kept trying (the record is already safe)
MAX_REQUEST_BYTES = 256 * 1024
WATCH_REFRESH_S = 5.0  # how often the agents with decided requests are read again (expiries publish no event)
APPROVAL_EVENT_MARK = b"warden.approval:"  # in the event id of every approval event the desk publishes


def correlation_of(value: bytes | None) -> str | None:
    """The correlation id of a request that did not validate, when its JSON can still be read."""
    try:
        found = json.loads(value or b"").get("correlation_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return redact_text(found, 256) if isinstance(found, str) else None


async def _kept_running(loop: Callable[[], Awaitable[None]]) -> None:
    """A consumer loop that a broker error does not end: logged, then resumed (each message is handled whole:
    recorded or dead-lettered, never raised, so only fetching or committing can fail here)."""
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; resuming in 1s", getattr(loop, "__name__", "an approvals loop"))
            await asyncio.sleep(1.0)


def _windows(holder: PolicyHolder) -> timedelta:
    """The longest identity-approval window of the live policy: how long a decision can cover a change."""
    windows = [wf.scope.identity_changes.window for wf in holder.current.matrix.workflows.values()]
    return max(windows, default=timedelta(0))


def derived_id(msg: ConsumerRecord[bytes, bytes]) -> str:
    """A request without its own id gets one from its place in the log: a redelivery gets the same one."""
    return "k-" + hashlib.sha256(f"{msg.topic}\0{msg.partition}\0{msg.offset}".encode()).hexdigest()[:32]


class ApprovalHost:
    """Started by the Runtime after the incident responder (whose database and Slack notifier it shares)."""

    def __init__(self, settings: Settings, kafka: KafkaAccess | str, responder: IncidentResponder, holder: PolicyHolder,
                 quarantined: Mapping[str, QuarantineMark], *, history: History | None = None) -> None:
        self.settings, self.kafka, self.holder, self.quarantined = settings, access(kafka), holder, quarantined
        # the activity topic's own format (streams.ingest.INPUTS), read for the identity changes it carries
        self._decode = settings.live_inputs[ACTIVITY].replay(reading(settings, lambda: holder.current))
        self.history = history
        self.sealer = settings.sealer()
        self.desk = ApprovalDesk(responder.engine, judge=self._judge, clock=responder.clock,
                                 wake=responder.outbox.wake,
                                 notifiers=[n.name for n in responder.notifiers if isinstance(n, AsksApproval)],
                                 publish=self._publish, poll_s=settings.approvals_poll_s,
                                 live_policy=lambda: holder.current.sha256)
        if responder.interactivity is not None:
            responder.interactivity.take_approvals(self.desk)
        tokens = parse_tokens(settings.gateway_tokens.get_secret_value()) if settings.gateway_tokens else []
        owners = parse_tokens(settings.api_tokens.get_secret_value()) if settings.api_tokens else []
        self.api = ApprovalApi(self.desk, tokens, serve_openapi=responder.api is None and bool(tokens),
                               owner_tokens=owners) if tokens or owners else None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._actions: AIOKafkaConsumer | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watched: set[str] = set()
        self._watched_at = 0.0

    def _judge(self, request: ApprovalRequest, request_id: str, now: datetime) -> Judgement:
        return judge(request, request_id, self.holder.current, now, self.quarantined, history=self.history)

    def route_installers(self) -> list[RouteInstaller]:
        return [self.api.install] if self.api else []

    async def start(self) -> None:
        s = self.settings
        self._producer = self.kafka.producer(acks="all")
        await self._producer.start()
        # Topics are subscribed after start(): given to the constructor, start() waits for the group join (5 s on
        # Tansu, each), and the worker's start-up with it; subscribed, both groups join alongside the ingest's.
        self._consumer = self.kafka.consumer(
            group_id=f"{s.app_id}.approvals",
            group_instance_id=s.kafka_group_instance_id,
            enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=int(
                s.kafka_session_timeout_s * 1000), heartbeat_interval_ms=int(s.kafka_heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(s.kafka_rebalance_timeout_s * 1000))
        await self._consumer.start()
        self._consumer.subscribe([s.topic_approval_requests])
        self._actions = self.kafka.consumer(
            group_id=f"{s.app_id}.approval-actions",
            group_instance_id=s.kafka_group_instance_id,
            enable_auto_commit=False, auto_offset_reset="latest", session_timeout_ms=int(
                s.kafka_session_timeout_s * 1000), heartbeat_interval_ms=int(s.kafka_heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(s.kafka_rebalance_timeout_s * 1000),
            max_partition_fetch_bytes=max(1_048_576, 2 * s.max_message_bytes))
        await self._actions.start()
        self._actions.subscribe([s.input_topic(ACTIVITY)])
        self.desk.loop.start()
        self._task = asyncio.create_task(_kept_running(self._consume), name="warden.approvals.kafka")
        self._watch_task = asyncio.create_task(_kept_running(self._watch_actions), name="warden.approvals.actions")
        log.warning("approvals up: kafka %s -> %s; http %s", s.topic_approval_requests, s.topic_approval_decisions,
                    "/v1/approvals" if self.api and self.api.tokens else "off (WARDEN_GATEWAY_TOKENS is unset)")

    async def stop(self) -> None:
        for task in (self._task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.desk.loop.stop()
        if self._actions is not None:
            await self._actions.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000, max_records=500)
            for messages in batch.values():
                for msg in messages:
                    await self._handle(msg)
            if batch:
                await self._consumer.commit()

    async def _watch_actions(self) -> None:
        assert self._actions is not None
        while True:
            batch = await self._actions.getmany(timeout_ms=1000, max_records=2000)
            if time.monotonic() - self._watched_at > WATCH_REFRESH_S:  # agents whose decisions aged out leave
                lookback = datetime.now(UTC) - max(_windows(self.holder), timedelta(hours=1))
                self._watched = await self.desk.store.watched_agents(lookback)
                self._watched_at = time.monotonic()
            for messages in batch.values():
                for msg in messages:
                    try:
                        await self._match(msg)
                    except Exception as exc:  # noqa: BLE001 - the audit note is lost, never the detection
                        log.warning("cannot put the action at %s[%d]@%d on its approval record: %s", msg.topic,
                                    msg.partition, msg.offset, type(exc).__name__)
            if batch:
                await self._actions.commit()

    async def _match(self, msg: ConsumerRecord[bytes, bytes]) -> None:
        """The identity changes in one activity message from a watched agent, each put on its record."""
        agent = (msg.key or b"").decode("utf-8", "replace")
        if msg.value is None:
            return
        if agent not in self._watched:
            if APPROVAL_EVENT_MARK not in msg.value:  # a substring scan, no decode: most messages stop here
                return
            self._watched.add(agent)  # Warden's own approval event: the change it covers comes behind it
        decoded = self._decode(msg.value, self.settings.max_message_bytes)
        policy = self.holder.current
        for ev in decoded.events:
            change = identity_change_of(Context.of(ev, policy))
            if change is None:
                continue
            target = redact_text(change.target, 250)
            await self.desk.store.match_action(ev.agent.id, target, ev.event_id, at=ev.ts, now=self.desk.clock(),
                                               detail={"event_id": redact_text(ev.event_id, 256),
                                                       "ts": ev.ts.isoformat(), "operation": change.operation,
                                                       "target": target})

    async def _handle(self, msg: ConsumerRecord[bytes, bytes]) -> None:
        """Record one request (its answer is published by the desk), or dead-letter it with the reason."""
        value = msg.value or b""
        if len(value) > MAX_REQUEST_BYTES:
            await self._dead_letter(msg, "too_large", f"{len(value)} bytes (limit {MAX_REQUEST_BYTES})")
            return
        try:
            request = ApprovalRequest.model_validate_json(value)
        except ValidationError as exc:
            reason = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                               for e in exc.errors(include_input=False, include_url=False))
            await self._dead_letter(msg, "invalid_request", reason)
            return
        try:
            await RECORD.call(lambda: self.desk.submit(request, gateway=TRANSPORT, transport=TRANSPORT,
                                                       request_id=derived_id(msg)))
        except Exception as exc:  # noqa: BLE001 - never acked silently: dead-lettered with the reason
            log.error("cannot record approval request at %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset,
                      type(exc).__name__)
            await self._dead_letter(msg, "processing_error", f"{type(exc).__name__}: {exc}"[:500])

    async def _dead_letter(self, msg: ConsumerRecord[bytes, bytes], code: str, reason: str) -> None:
        assert self._producer is not None
        metrics.APPROVAL_INVALID.labels(transport=TRANSPORT).inc()
        headers = [("warden.reason_code", code.encode()),
                   ("warden.reason", redact_text(reason, 4096).encode("utf-8", "replace")[:4096]),
                   ("warden.source_topic", msg.topic.encode()),
                   ("warden.source_partition", str(msg.partition).encode()),
                   ("warden.source_offset", str(msg.offset).encode())]
        correlation = correlation_of(msg.value)
        if correlation:
            headers.append(("warden.correlation_id", correlation.encode()))
        value = None
        if msg.value is not None:  # sealed whole: arguments may carry secrets
            headers.append(("warden.sealed", SCHEME))
            value = self.sealer.seal_bytes(msg.value[:MAX_REQUEST_BYTES])
        producer = self._producer
        await SEND.call(lambda: producer.send_and_wait(self.settings.topic_approval_dlq, value=value, key=msg.key,
                                                       headers=headers))
        log.warning("approval request at %s[%d]@%d dead-lettered: %s", msg.topic, msg.partition, msg.offset, code)

    async def _publish(self, answer: ApprovalAnswer, event: ActivityEvent | None) -> None:
        """The answer keyed by request id; a decision's approval event keyed by agent, onto the activity topic."""
        assert self._producer is not None
        s = self.settings
        if event is not None:
            await self._producer.send_and_wait(s.input_topic(ACTIVITY), key=event.agent.id.encode(),
                                               value=event.model_dump_json(exclude_none=True).encode())
        await self._producer.send_and_wait(s.topic_approval_decisions, key=answer.request_id.encode(),
                                           value=answer.model_dump_json().encode())
