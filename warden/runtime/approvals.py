"""Approval before action, wired: the Kafka transport (requests in, answers and approval events out), the HTTP
transport's routes, and the desk that records, routes, escalates and expires (responders.approvals).

Requests on WARDEN_TOPIC_APPROVAL_REQUESTS are read by a consumer group of their own (`<app id>.approvals`), each
judged by the pure stage (streams.approvals) against the live policy and recorded before its offset is committed;
a malformed one goes to WARDEN_TOPIC_APPROVAL_DLQ sealed, with the reason and the correlation id (when one can be
read) as headers, and the others go on. Answers go to WARDEN_TOPIC_APPROVAL_DECISIONS keyed by request id; a
decided approval also goes to the activity topic keyed by agent, where `unreviewed_identity_change` reads it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from responders.api import parse_tokens
from responders.api.approvals import ApprovalApi
from responders.approvals.desk import ApprovalDesk
from responders.base import RouteInstaller
from responders.incident_responder import IncidentResponder
from responders.notifiers.slack.notifier import SlackNotifier
from streams.approvals import judge
from warden.contract import metrics
from warden.contract.approvals import ApprovalAnswer, ApprovalRequest, Judgement
from warden.contract.containment import QuarantineMark
from warden.contract.events import ActivityEvent
from warden.contract.redact import redact_text
from warden.kit.retry import Backoff
from warden.kit.sealing import SCHEME
from warden.runtime.policy_holder import PolicyHolder
from warden.runtime.settings import Settings

log = logging.getLogger("warden.approvals")
TRANSPORT = "kafka"
RECORD = Backoff(initial_s=0.2, attempts=5)  # the database refused: tried again, then dead-lettered
SEND = Backoff(initial_s=0.2, max_s=30.0)  # a topic write: kept trying (the record is already safe)
MAX_REQUEST_BYTES = 256 * 1024


def correlation_of(value: bytes | None) -> str | None:
    """The correlation id of a request that did not validate, when its JSON can still be read."""
    try:
        found = json.loads(value or b"").get("correlation_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return redact_text(found, 256) if isinstance(found, str) else None


def derived_id(msg: ConsumerRecord[bytes, bytes]) -> str:
    """A request without its own id gets one from its place in the log: a redelivery gets the same one."""
    return "k-" + hashlib.sha256(f"{msg.topic}\0{msg.partition}\0{msg.offset}".encode()).hexdigest()[:32]


class ApprovalHost:
    """Started by the Runtime after the incident responder (whose database and Slack notifier it shares)."""

    def __init__(self, settings: Settings, bootstrap: str, responder: IncidentResponder, holder: PolicyHolder,
                 quarantined: Mapping[str, QuarantineMark]) -> None:
        self.settings, self.bootstrap, self.holder, self.quarantined = settings, bootstrap, holder, quarantined
        self.sealer = settings.sealer()
        slack = next((n for n in responder.notifiers if isinstance(n, SlackNotifier)), None)
        self.desk = ApprovalDesk(responder.engine, judge=self._judge, clock=responder.clock, slack=slack,
                                 publish=self._publish, poll_s=settings.approvals_poll_s,
                                 live_policy=lambda: holder.current.sha256)
        if responder.interactivity is not None:
            responder.interactivity.payload_handlers.append(self.desk.on_payload)
        tokens = parse_tokens(settings.gateway_tokens.get_secret_value()) if settings.gateway_tokens else []
        self.api = ApprovalApi(self.desk, tokens, serve_openapi=responder.api is None) if tokens else None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def _judge(self, request: ApprovalRequest, request_id: str, now: datetime) -> Judgement:
        return judge(request, request_id, self.holder.current, now, self.quarantined)

    def route_installers(self) -> list[RouteInstaller]:
        return [self.api.install] if self.api else []

    async def start(self) -> None:
        s = self.settings
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            s.topic_approval_requests, bootstrap_servers=self.bootstrap, group_id=f"{s.app_id}.approvals",
            enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=int(
                s.kafka_session_timeout_s * 1000), heartbeat_interval_ms=int(s.kafka_heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(s.kafka_rebalance_timeout_s * 1000))
        await self._consumer.start()
        self.desk.loop.start()
        self._task = asyncio.create_task(self._consume(), name="warden.approvals.kafka")
        log.warning("approvals up: kafka %s -> %s; http %s", s.topic_approval_requests, s.topic_approval_decisions,
                    "/v1/approvals" if self.api else "off (WARDEN_GATEWAY_TOKENS is unset)")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.desk.loop.stop()
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
            await self._producer.send_and_wait(s.topic_activity, key=event.agent.id.encode(),
                                               value=event.model_dump_json(exclude_none=True).encode())
        await self._producer.send_and_wait(s.topic_approval_decisions, key=answer.request_id.encode(),
                                           value=answer.model_dump_json().encode())
