"""Each effect once, across a crash: a `warden run` process is killed (SIGKILL) while a containment step is
`executing`, then started again. The done step (the revocation at the real oidc-provider) is never repeated; the
interrupted one (a signed webhook) is sent again with the same webhook-id, which is the receiver's dedup key."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from responders.db import make_engine, session_factory
from responders.db.models import ContainmentStep, TimelineEntry
from service.demo.oauth_server import OAuthServer
from service.runtime.settings import BUNDLED_POLICY
from tests.integration.test_many_workers import Worker
from tests.support.incident_helpers import eventually
from tests.support.kafka_helpers import event, produce_events
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

HOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def crash_policy(tmp_path: Path, server: OAuthServer, receiver: WebhookReceiver) -> Path:
    """The bundled policy with one binding: an unreviewed identity change runs revoke_token, then a webhook."""
    folder = tmp_path / "policy"
    shutil.copytree(BUNDLED_POLICY, folder)
    rules = folder / "20-rules.yaml"
    doc = yaml.safe_load(rules.read_text())
    doc["issuers"] = {"corp-idp": server.matrix_issuer("env:WARDEN_TEST_IDP_SECRET")}
    doc["playbook_definitions"] = {"revoke_then_tell": {"steps": [
        {"action": "revoke_token"},
        {"action": "webhook", "params": {"url": receiver.url, "secret": "env:WARDEN_TEST_HOOK_SECRET"}},
    ]}}
    doc["playbooks"] = [{"rules": ["unreviewed_identity_change"], "playbook": "revoke_then_tell", "gate": "auto",
                         "min_severity": "high"}]
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def worker_env(kafka_bootstrap: str, tmp_path: Path, policy: Path, server: OAuthServer) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    base = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    return base | {
        "WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, "WARDEN_POLICY": str(policy),
        "WARDEN_DATA_DIR": str(tmp_path / "data"), "WARDEN_APP_ID": f"warden-crash-{suffix}",
        "WARDEN_TOPIC_ACTIVITY": f"c{suffix}.activity", "WARDEN_TOPIC_FINDINGS": f"c{suffix}.findings",
        "WARDEN_TOPIC_DLQ": f"c{suffix}.dlq", "WARDEN_TOPIC_CONTROL": f"c{suffix}.control",
        "WARDEN_TOPIC_REVOCATIONS": f"c{suffix}.revocations", "WARDEN_WEB_BIND": "127.0.0.1:0",
        "WARDEN_TOPIC_OTLP": f"c{suffix}.otlp", "WARDEN_TOPIC_APPROVAL_REQUESTS": f"c{suffix}.approval.requests",
        "WARDEN_TOPIC_APPROVAL_DECISIONS": f"c{suffix}.approval.decisions",
        "WARDEN_TOPIC_APPROVAL_DLQ": f"c{suffix}.approval.dlq",
        "WARDEN_KAFKA_SESSION_TIMEOUT_S": "6", "WARDEN_KAFKA_HEARTBEAT_INTERVAL_S": "1",
        "WARDEN_KAFKA_REBALANCE_TIMEOUT_S": "3", "WARDEN_CONTAINMENT_POLL_S": "0.2",
        "WARDEN_CONTAINMENT_TIMEOUT_S": "60",  # the held webhook keeps its step executing until the kill
        "WARDEN_TEST_IDP_SECRET": server.client_secret, "WARDEN_TEST_HOOK_SECRET": HOOK_SECRET,
        "PYTHONUNBUFFERED": "1",
    }


async def ledger(db: Path) -> Sequence[ContainmentStep]:
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with session_factory(engine)() as s:
            return list((await s.execute(select(ContainmentStep).order_by(ContainmentStep.step))).scalars())
    finally:
        await engine.dispose()


async def timeline(db: Path) -> list[tuple[str, dict[str, Any]]]:
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with session_factory(engine)() as s:
            return [(e.kind, e.detail) for e in (await s.execute(select(TimelineEntry))).scalars()]
    finally:
        await engine.dispose()


async def test_a_worker_killed_mid_step_resumes_from_the_ledger_and_each_effect_happens_once(
    kafka_bootstrap: str, oauth_issuer: OAuthServer, tmp_path: Path
) -> None:
    receiver = await WebhookReceiver(HOOK_SECRET).start()
    receiver.hold = asyncio.Event()  # the first delivery hangs: its step stays `executing` until the kill
    env = worker_env(kafka_bootstrap, tmp_path, crash_policy(tmp_path, oauth_issuer, receiver), oauth_issuer)
    db = tmp_path / "data" / "warden.db"
    token = oauth_issuer.issue_token()
    first = Worker("first", env, tmp_path / "first.log")
    second = Worker("second", env, tmp_path / "second.log")
    try:
        first.start()
        await first.up()
        grant = event("iam-agent-1", "identity_change", ts=datetime.now(UTC).isoformat(),
                      identity_change={"operation": "grant_role", "target": "user:mallory", "entitlement": "admins"},
                      credential={"id": "kid-iam-7", "issuer": oauth_issuer.issuer, "token": token})
        await produce_events(kafka_bootstrap, env["WARDEN_TOPIC_ACTIVITY"], [grant])
        await eventually(lambda: receiver.arrived, timeout=60, what=f"the webhook request\n{first.log()[-3000:]}")
        assert oauth_issuer.introspect(token)["active"] is False  # step 0 is done before step 1 starts
        statuses = [(s.action, s.status) for s in await ledger(db)]
        assert statuses == [("revoke_token", "done"), ("webhook", "executing")]
        first.signal(signal.SIGKILL)
        assert first.proc is not None and first.proc.wait(10) == -signal.SIGKILL
        receiver.hold.set()  # from now on the receiver answers

        second.start()
        await second.up()

        async def over() -> bool:
            return [s.status for s in await ledger(db)] == ["done", "done"]

        await eventually(over, timeout=60, what=f"the resumed step done\n{second.log()[-3000:]}")
    finally:
        first.stop()
        second.stop()
        await receiver.stop()
    steps = await ledger(db)
    webhook_id = f"warden-{steps[1].incident_id}-revoke_then_tell-1"
    assert receiver.arrived == [webhook_id, webhook_id]  # sent again after the crash, under the same id
    # One effect for a receiver that dedups on webhook-id, as Standard Webhooks receivers should.
    assert {d.webhook_id for d in receiver.deliveries if d.verified} == {webhook_id}
    assert (steps[0].attempts, steps[1].attempts) == (1, 2)  # the done revocation was never run again
    done = [d["action"] for k, d in await timeline(db) if k == "containment_step_done"]
    assert done == ["revoke_token", "webhook"]
    assert "resuming 1 containment steps interrupted by the last stop" in second.log()
    body = json.loads(receiver.deliveries[-1].body)
    assert Webhook(HOOK_SECRET).verify(receiver.deliveries[-1].body, receiver.deliveries[-1].headers) == body
