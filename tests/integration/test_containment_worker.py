"""Containment through a real worker: a critical finding revokes the agent's real OAuth token (oidc-provider) and
quarantines the agent on warden.control; its next action is a quarantine breach; a release lifts it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from responders.db.models import ContainmentStep
from responders.incident_responder import IncidentResponder
from service.demo.oauth_server import OAuthServer
from service.runtime.settings import BUNDLED_POLICY, Settings
from service.runtime.worker import Runtime
from tests.support.incident_helpers import eventually
from tests.support.kafka_helpers import event, produce_events, read_topic
from tests.support.metrics import metric_value
from warden.contract.findings import OwnerRef
from warden.telemetry import metrics

pytestmark = pytest.mark.integration


def policy_with_issuer(tmp_path: Path, server: OAuthServer) -> Path:
    """The bundled policy, with its OAuth issuer pointed at the test's oidc-provider."""
    folder = tmp_path / "policy"
    shutil.copytree(BUNDLED_POLICY, folder)
    rules = folder / "20-rules.yaml"
    doc = yaml.safe_load(rules.read_text())
    doc["issuers"] = {"corp-idp": {
        "issuer": server.issuer, "revocation_endpoint": server.revocation_endpoint,
        "introspection_endpoint": server.introspection_endpoint, "client_id": server.client_id,
        "client_secret": "env:WARDEN_TEST_IDP_SECRET"}}
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def unapproved_grant(token: str, issuer: str, ts: datetime) -> dict[str, object]:
    """A critical finding: iam-agent-1's workflow is critical and agentic, and nobody approved this grant."""
    return event("iam-agent-1", "identity_change", ts=ts.isoformat(),
                 identity_change={"operation": "grant_role", "target": "user:mallory", "entitlement": "admins"},
                 credential={"id": "kid-iam-7", "issuer": issuer, "token": token})


async def test_a_critical_finding_revokes_the_real_token_and_quarantines_until_released(
    worker_settings: Settings, oauth_issuer: OAuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_TEST_IDP_SECRET", oauth_issuer.client_secret)
    settings = worker_settings.model_copy(update={
        "policy": policy_with_issuer(tmp_path, oauth_issuer), "containment_poll_s": 0.1, "outbox_poll_s": 0.1})
    token = oauth_issuer.issue_token()
    assert oauth_issuer.introspect(token)["active"] is True
    async with Runtime(settings) as rt:
        assert isinstance(rt.responder, IncidentResponder) and rt.control is not None
        view = rt.control  # narrowed, for the lambdas below
        await produce_events(rt.bootstrap, settings.topic_activity,
                             [unapproved_grant(token, oauth_issuer.issuer, datetime.now(UTC))])
        await eventually(lambda: not oauth_issuer.introspect(token)["active"], timeout=60,
                         what="the token revoked at the issuer")
        [control] = await read_topic(rt.bootstrap, settings.topic_control, expect=1)
        assert control.key == b"iam-agent-1" and json.loads(control.value)["state"] == "quarantined"
        await eventually(lambda: "iam-agent-1" in view.agents, what="the worker's view of the quarantine")
        assert metric_value(metrics.QUARANTINED) == 1

        store = rt.responder.store

        async def contain_steps() -> dict[str, str]:
            async with store.sessions.begin() as s:
                rows = (await s.execute(select(ContainmentStep).where(ContainmentStep.playbook == "contain_agent")
                                        )).scalars()
                return {r.action: r.status for r in rows}

        await eventually(lambda: _all_ended(contain_steps), timeout=30, what="every contain_agent step ended")
        steps = await contain_steps()
        assert steps == {"revoke_token": "done", "revocation_list": "done", "quarantine_agent": "done",
                         "notify": "done"}
        async with store.sessions.begin() as s:
            rows = list((await s.execute(select(ContainmentStep))).scalars())
        assert all(r.sealed_token is None for r in rows)  # the token is dropped once its step is over
        revoke = next(r for r in rows if r.action == "revoke_token")
        assert revoke.detail.get("confirmed") == "true" and revoke.decided_by == "warden"

        # The agent acts again: containment did not take effect there, which is itself critical.
        await produce_events(rt.bootstrap, settings.topic_activity, [event(
            "iam-agent-1", tool={"name": "directory.lookup_user"}, ts=datetime.now(UTC).isoformat(),
            credential={"id": "kid-iam-8"})])
        revoked = await read_topic(rt.bootstrap, settings.topic_revocations, expect=2, timeout=60)
        assert sorted(r.key for r in revoked) == [b"kid-iam-7", b"kid-iam-8"]  # contain_agent's, then the breach's
        findings = [json.loads(r.value) for r in await read_topic(rt.bootstrap, settings.topic_findings, expect=2)]
        assert any(f["rule"] == "quarantine_breach" and f["severity"] == "critical" for f in findings)
        assert token not in json.dumps(findings)  # sealed, never in clear on the topic

        incident_id = rows[0].incident_id
        jordan = OwnerRef(id="jordan", name="Jordan Lee", contacts={"slack": "U0JORDAN"})
        assert await store.decisions.request_release(incident_id, owner=jordan, via="cli", identity="tester",
                                                     now=datetime.now(UTC))
        await eventually(lambda: "iam-agent-1" not in view.agents, timeout=30, what="the quarantine lifted")
        assert metric_value(metrics.QUARANTINED) == 0
        records = await read_topic(rt.bootstrap, settings.topic_control, expect=2)
        assert [json.loads(r.value)["state"] for r in records] == ["quarantined", "released"]
        assert json.loads(records[1].value)["by"] == "jordan"
        kinds = [e.kind for e in await store.timeline.entries(incident_id)]
        assert "release_requested" in kinds and kinds.count("containment_step_done") == 5
    # Nowhere at rest in clear: the SQLite database and its write-ahead log, read as bytes.
    stored = b"".join(p.read_bytes() for p in (settings.data_dir).glob("warden.db*"))
    assert stored and token.encode() not in stored


async def _all_ended(steps: Callable[[], Awaitable[dict[str, str]]]) -> bool:
    found = await steps()
    return len(found) == 4 and all(v in {"done", "failed", "cancelled"} for v in found.values())
