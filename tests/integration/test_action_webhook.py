"""The webhook action against a local receiver that verifies Standard Webhooks signatures with the library."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook as Verifier

from playbooks.actions import ACTIONS
from playbooks.actions.base import ActionFailed, Credential
from playbooks.actions.webhook import Webhook, WebhookParams
from tests.support.action_context import context, matrix
from tests.support.webhook_receiver import WebhookReceiver

SECRET_ENV = "WARDEN_TEST_WEBHOOK_SECRET"
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
TOKEN = "agent-bearer-token-do-not-leak"
action = Webhook()


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WebhookReceiver]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = await WebhookReceiver(secret=SECRET).start()
    try:
        yield server
    finally:
        if server.hold is not None:
            server.hold.set()
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _params(receiver: WebhookReceiver, **extra: Any) -> WebhookParams:
    return WebhookParams(url=receiver.url, secret=f"env:{SECRET_ENV}", **extra)


async def test_registered_as_an_idempotent_action_without_the_token() -> None:
    assert isinstance(ACTIONS["webhook"], Webhook)
    assert action.idempotent and not action.uses_token


async def test_the_hook_is_signed_so_a_standard_webhooks_library_verifies_it(
    receiver: WebhookReceiver, http: aiohttp.ClientSession,
) -> None:
    ctx = context(http, key="wh-42-contain-0", credential=Credential(id="cred-7", issuer="https://idp", token=TOKEN))
    detail = await action.run(_params(receiver, payload={"ticket_queue": "SEC", "priority": 1}), ctx)
    assert receiver.accepted_ids == ["wh-42-contain-0"]
    [delivery] = receiver.deliveries
    # The receiver verified it; verify again here, independently, from what went over the wire.
    assert Verifier(SECRET).verify(delivery.body, delivery.headers) == delivery.payload
    assert delivery.headers["webhook-id"] == "wh-42-contain-0"
    data = delivery.payload["data"]
    assert delivery.payload["type"] == "warden.containment"
    assert data["incident"] == {
        "id": 42, "rule": "secret_out_of_scope", "severity": "critical",
        "title": "Agent read a secret outside its scope", "agent_id": "billing-agent", "workflow": "billing",
        "target": "prod-db",
    }
    assert (data["playbook"], data["step"]) == ("contain", 0)
    assert (data["ticket_queue"], data["priority"]) == ("SEC", 1)
    assert data["credential"] == {"id": "cred-7", "issuer": "https://idp"}
    assert TOKEN not in delivery.body.decode()
    assert detail == {"url": receiver.url.split("?")[0], "status": "204", "webhook_id": "wh-42-contain-0"}


async def test_a_tampered_body_or_another_secret_fails_verification(
    receiver: WebhookReceiver, http: aiohttp.ClientSession,
) -> None:
    await action.run(_params(receiver), context(http))
    [delivery] = receiver.deliveries
    other = Verifier("whsec_" + base64.b64encode(os.urandom(24)).decode())
    with pytest.raises(Exception, match="signature"):
        other.verify(delivery.body, delivery.headers)
    with pytest.raises(Exception, match="signature"):
        Verifier(SECRET).verify(delivery.body.replace(b"prod-db", b"dev-db"), delivery.headers)


async def test_every_attempt_sends_the_same_id_and_body(
    receiver: WebhookReceiver, http: aiohttp.ClientSession,
) -> None:
    params = _params(receiver)
    await action.run(params, context(http, attempt=1))
    await action.run(params, context(http, attempt=2))  # e.g. the engine retried after losing the first reply
    first, second = receiver.deliveries
    assert first.webhook_id == second.webhook_id == "wh-42-contain-0"
    assert first.body == second.body
    assert receiver.accepted_ids == ["wh-42-contain-0", "wh-42-contain-0"]  # the receiver dedups by that id


async def test_a_receiver_down_is_retryable_and_up_again_gets_it(
    receiver: WebhookReceiver, http: aiohttp.ClientSession,
) -> None:
    params = _params(receiver)
    await receiver.down()
    with pytest.raises(ActionFailed) as failed:
        await action.run(params, context(http, attempt=1))
    assert failed.value.retryable is True and "unreachable" in failed.value.reason
    assert receiver.deliveries == []
    await receiver.up()
    await action.run(params, context(http, attempt=2))
    assert receiver.accepted_ids == ["wh-42-contain-0"]


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (500, True), (429, True), (408, True),
                                                   (400, False), (404, False), (410, False), (301, False)])
async def test_an_error_status_is_retryable_only_when_waiting_can_help(
    receiver: WebhookReceiver, http: aiohttp.ClientSession, status: int, retryable: bool,
) -> None:
    receiver.status = status
    with pytest.raises(ActionFailed) as failed:
        await action.run(_params(receiver), context(http))
    assert failed.value.retryable is retryable
    assert f"HTTP {status}" in failed.value.reason


async def test_a_receiver_that_does_not_answer_in_time_is_retryable(
    receiver: WebhookReceiver, http: aiohttp.ClientSession,
) -> None:
    receiver.hold = asyncio.Event()
    with pytest.raises(ActionFailed) as failed:
        await action.run(_params(receiver), context(http, timeout_s=0.2))
    assert failed.value.retryable is True and "did not answer" in failed.value.reason


async def test_agent_strings_travel_as_data_only(receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    hostile = 'evil\r\nwebhook-id: forged "<!channel>" & </script>'
    await action.run(_params(receiver), context(http, agent_id=hostile, target=hostile))
    [delivery] = receiver.deliveries
    assert delivery.verified and delivery.webhook_id == "wh-42-contain-0"
    assert delivery.payload["data"]["incident"]["agent_id"] == hostile
    assert json.loads(delivery.body)["data"]["incident"]["target"] == hostile


async def test_secrets_never_reach_the_detail_the_errors_or_the_logs(
    receiver: WebhookReceiver, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = context(http, credential=Credential(id="cred-7", issuer="https://idp", token=TOKEN))
    detail = await action.run(_params(receiver), ctx)
    receiver.status = 400
    with pytest.raises(ActionFailed) as failed:
        await action.run(_params(receiver), ctx)
    assert "wh-42-contain-0" in caplog.text  # it did log
    for text in (json.dumps(detail), failed.value.reason, caplog.text):
        assert SECRET not in text and SECRET.removeprefix("whsec_") not in text
        assert TOKEN not in text and "tenant=acme" not in text


@pytest.mark.parametrize(("value", "reason"), [(None, "is not set"), ("not base64 !!", "not a whsec_")])
async def test_a_missing_or_malformed_secret_is_not_retryable(
    receiver: WebhookReceiver, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
    value: str | None, reason: str,
) -> None:
    if value is None:
        monkeypatch.delenv(SECRET_ENV)
    else:
        monkeypatch.setenv(SECRET_ENV, value)
    with pytest.raises(ActionFailed) as failed:
        await action.run(_params(receiver), context(http))
    assert failed.value.retryable is False and reason in failed.value.reason
    assert receiver.deliveries == []
    if value is not None:
        assert value not in failed.value.reason


def test_params_refuse_an_inline_secret_and_payload_fields_warden_fills() -> None:
    with pytest.raises(ValidationError, match="secret"):
        WebhookParams(url="https://hooks.example/warden", secret=SECRET)
    with pytest.raises(ValidationError, match="incident"):
        WebhookParams(url="https://hooks.example/warden", secret="env:X", payload={"incident": "forged"})
    with pytest.raises(ValidationError, match="url"):
        WebhookParams(url="ftp://hooks.example", secret="env:X")
    params = {"url": "https://user:pw@hooks.example/warden?token=abc", "secret": "env:X"}
    assert action.check(params, matrix()) == []
    assert action.describe(params) == "POST a signed containment webhook to https://hooks.example/warden"
