"""Hosts the playbook engine in a worker: its Kafka producer, HTTP session and services, started and stopped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import aiohttp
from aiokafka import AIOKafkaProducer

from playbooks.actions import RUNNABLE
from playbooks.actions.base import Services
from playbooks.engine import ContainmentEngine
from responders.db import is_sqlite
from responders.incident_responder import IncidentResponder
from responders.store.common import utcnow
from service.runtime.kafka_access import KafkaAccess, access
from service.runtime.policy_holder import PolicyHolder
from service.runtime.settings import Settings
from warden.contract.findings import OwnerRef
from warden.kit import secrets
from warden.kit.retry import Backoff
from warden.telemetry import metrics

log = logging.getLogger("warden.containment")


class ContainmentHost:
    """The engine plus what its actions reach the world through. `start` after the responder (the DB is migrated)."""

    def __init__(self, settings: Settings, kafka: KafkaAccess | str, responder: IncidentResponder, holder: PolicyHolder,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.settings, self.kafka, self.responder, self.holder, self.clock = (
            settings, access(kafka), responder, holder, clock)
        self.producer: AIOKafkaProducer | None = None
        self.http: aiohttp.ClientSession | None = None
        self.engine: ContainmentEngine | None = None

    async def start(self) -> ContainmentEngine:
        s = self.settings
        # acks=all: a control or revocation record counts as published only once the broker has it.
        self.producer = self.kafka.producer(acks="all")
        await self.producer.start()
        self.http = aiohttp.ClientSession()
        producer = self.producer
        store = self.responder.store

        async def publish(topic: str, key: bytes, value: bytes | None) -> None:
            await producer.send_and_wait(topic, value=value, key=key)

        engine: ContainmentEngine | None = None

        async def notify(key: str, incident_id: int, owner: OwnerRef, note: str) -> bool:
            assert engine is not None
            return await engine.ledger.notify_once(key, incident_id, owner, note, self.clock())

        services = Services(http=self.http, publish=publish, notify=notify, secret=secrets.resolve,
                            control_topic=s.topic_control, revocations_topic=s.topic_revocations)
        engine = ContainmentEngine(
            store, actions=RUNNABLE, services=services, matrix=lambda: self.holder.current.matrix,
            sealer=s.sealer(), clock=self.clock, poll_s=s.containment_poll_s,
            backoff=Backoff(initial_s=s.containment_retry_backoff_s, max_s=300.0,
                            attempts=s.containment_max_attempts),
            timeout_s=s.containment_timeout_s, on_change=self.responder.outbox.wake,
        )
        self.engine = engine
        if is_sqlite(self.responder.engine):  # one worker per SQLite file: a lease left by a crash is ours
            released = await engine.ledger.release_leases()
            if released:
                log.warning("resuming %d containment steps interrupted by the last stop", released)
        for action in RUNNABLE:  # zero series from the start: an alert's increase() sees the first failure
            for outcome in ("done", "failed"):
                metrics.CONTAINMENT_ACTIONS.labels(action=action, outcome=outcome)
        engine.loop.start()
        self.responder.containment_due.append(engine.loop.wake)  # a page opened, a click approved or released
        return engine

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.loop.stop()
        if self.http is not None:
            await self.http.close()
        if self.producer is not None:
            await self.producer.stop()
