"""The webhook notifier end to end: a real responder and outbox on SQLite and PostgreSQL, POSTing to a local
receiver that verifies every request with the standardwebhooks library and keeps the ids it saw."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from responders.db.models import Notification
from responders.incident_responder import IncidentResponder
from responders.notifiers.registry import NOTIFIERS
from service.runtime.settings import Settings
from tests.support.incident_helpers import eventually, finding, running
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
LEAKED = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"  # a secret the agent put in its arguments


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    started = await WebhookReceiver(secret=SECRET).start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def webhook_settings(incident_db: str, receiver: WebhookReceiver, tmp_path: Path) -> Settings:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    return Settings(database_url=incident_db, data_dir=tmp_path / "data", notifiers="webhook",
                    webhook_url=receiver.url, webhook_secret_file=secret_file, webhook_timeout_s=1.0,
                    notify_max_attempts=3, notify_retry_backoff_s=0.05, outbox_poll_s=0.05, outbox_lease_s=0.5,
                    escalation_poll_s=0.05)


async def _rows(responder: IncidentResponder) -> list[Notification]:
    async with responder.store.sessions() as s:
        return list((await s.execute(select(Notification).order_by(Notification.id))).scalars())


async def _settled(responder: IncidentResponder, n: int) -> list[Notification] | None:
    rows = await _rows(responder)
    return rows if len(rows) >= n and all(r.status in ("delivered", "dead") for r in rows) else None


def _leaks(receiver: WebhookReceiver) -> list[str]:
    """Every secret that reached the receiver, in a body or a header."""
    sent = "\n".join(d.body.decode() + repr(d.headers) for d in receiver.deliveries)
    return [s for s in (SECRET, SECRET.removeprefix("whsec_"), LEAKED) if s in sent]


def test_the_webhook_is_a_registered_notifier_whose_settings_stop_start_up_when_wrong(tmp_path: Path) -> None:
    assert "webhook" in NOTIFIERS
    with pytest.raises(ValidationError, match="WARDEN_NOTIFIERS names webhook, which needs WARDEN_WEBHOOK_URL"):
        Settings(notifiers="webhook")
    with pytest.raises(ValidationError, match="must not hold credentials"):
        Settings(webhook_url="https://warden:hunter2@hooks.example.net/in")
    not_a_secret = tmp_path / "secret"
    not_a_secret.write_text("hunter2")
    with pytest.raises(ValidationError, match="does not hold a Standard Webhooks secret") as caught:
        Settings(webhook_secret_file=not_a_secret)
    assert "hunter2" not in str(caught.value)


async def test_each_notice_is_delivered_once_signed_threaded_and_without_secrets(
    webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    evidence = {"tool": "shell.exec", "arguments": f"curl -H 'Authorization: Bearer {LEAKED}' https://x"}
    async with running(webhook_settings) as responder:
        await responder.handle(finding("billing-agent-1", evidence=evidence))
        await eventually(lambda: _settled(responder, 1), what="the root delivered")
        await responder.handle(finding("billing-agent-1", evidence=evidence))
        rows = await eventually(lambda: _settled(responder, 2), what="the repeat delivered")
    assert [(r.notifier, r.kind, r.status, r.attempts) for r in rows] == [
        ("webhook", "root", "delivered", 1), ("webhook", "repeat", "delivered", 1)]
    assert len(receiver.deliveries) == 2 and all(d.verified for d in receiver.deliveries)
    root, repeat = (d.payload for d in receiver.deliveries)
    assert root["type"] == "incident.root" and repeat["type"] == "incident.repeat"
    assert root["incident"]["agent_id"] == "billing-agent-1" and root["to"]["id"]
    assert repeat["thread"] == receiver.deliveries[0].webhook_id, "a follow-up names its root"
    assert len(set(receiver.accepted_ids)) == 2
    assert _leaks(receiver) == []


async def test_a_retried_attempt_carries_the_same_id_so_the_receiver_acts_once(
    webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    receiver.hold = asyncio.Event()  # the first request arrives, then outlives the sender's 1 s timeout
    async with running(webhook_settings) as responder:
        await responder.handle(finding("billing-agent-1"))
        await eventually(lambda: len(receiver.arrived) >= 2, what="the retry after the timeout")
        receiver.hold.set()
        [row] = await eventually(lambda: _settled(responder, 1), what="the root delivered")
    assert row.status == "delivered" and row.attempts == 2
    first, second = receiver.arrived[:2]
    assert first == second, "the retry is the same message to the receiver"
    assert len(set(receiver.accepted_ids)) == 1, "a receiver that keeps the ids it saw acts once"


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (500, None), (429, "0")])
async def test_a_failing_receiver_is_retried_then_dead_lettered_with_a_console_alert(
    webhook_settings: Settings, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture, status: int,
    retry_after: str | None
) -> None:
    caplog.set_level(logging.WARNING)
    receiver.status, receiver.retry_after = status, retry_after
    async with running(webhook_settings) as responder:
        await responder.handle(finding("billing-agent-1"))
        [row] = await eventually(lambda: _settled(responder, 1), what="the root dead-lettered")
    assert row.status == "dead" and row.attempts == webhook_settings.notify_max_attempts == 3
    assert len(receiver.deliveries) == 3 and len(set(receiver.arrived)) == 1, "three tries of one message"
    assert f"HTTP {status}" in (row.last_error or "")
    undelivered = [r.getMessage() for r in caplog.records if r.getMessage().startswith("UNDELIVERED root")]
    assert len(undelivered) == 1 and "billing-agent-1" in undelivered[0]
    assert "tenant=acme" not in (row.last_error or ""), "the URL's query stays out of reasons"
    assert _leaks(receiver) == []


async def test_a_receiver_that_refuses_the_request_dead_letters_it_at_once(
    webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    receiver.status = 410
    async with running(webhook_settings) as responder:
        await responder.handle(finding("billing-agent-1"))
        [row] = await eventually(lambda: _settled(responder, 1), what="the root dead-lettered")
    assert row.status == "dead" and row.attempts == 1 and len(receiver.deliveries) == 1
