"""Helpers for containment tests: a matrix with bindings, findings that carry plans, an engine on a responder."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp

from playbooks.actions import RUNNABLE
from playbooks.actions.base import Publish, Services
from playbooks.engine import ContainmentEngine
from responders.incident_responder import IncidentResponder
from service.runtime.catalogue import CATALOGUE
from streams.detectors import DetectorState, detect
from tests.support.matrix_builder import BASE, tool
from warden.contract.findings import Finding
from warden.contract.matrix import Matrix
from warden.kit import secrets
from warden.kit.retry import Backoff
from warden.kit.sealing import Sealer
from warden.policy import Policy, build_policy

SEAL_KEY = "r7pWJ2hJq0m0fA0s9yB2nq2k8mW2Yc5Tq0s2k9bW3xE="
TELL = {"tell": {"steps": [{"action": "notify", "params": {"role": "business_owner", "message": "contained"}}]}}


def containment_policy(bindings: list[dict[str, Any]], definitions: dict[str, Any] | None = None,
                       **workflow_changes: Any) -> Policy:
    """The builder's matrix (workflow `provisioner`: approver jordan, escalation iam-team then ciso) with
    playbook bindings and definitions; `workflow_changes` update the provisioner workflow."""
    doc = copy.deepcopy(BASE)
    doc["playbooks"] = bindings
    doc["playbook_definitions"] = definitions if definitions is not None else dict(TELL)
    doc["workflows"]["provisioner"].update(workflow_changes)
    return build_policy(Matrix.model_validate(doc), CATALOGUE, sha256="sha-containment")


def violation(policy: Policy, agent: str = "iam-agent", name: str = "shell.exec", **fields: Any) -> Finding:
    """The unapproved_tool finding of one out-of-scope call, built by the real detect stage (plans included)."""
    found = [f for f in detect(tool(agent, name, **fields), policy, DetectorState()) if f.rule == "unapproved_tool"]
    assert len(found) == 1, found
    return found[0]


def no_publish() -> Publish:
    async def publish(topic: str, key: bytes, value: bytes | None) -> None:
        raise AssertionError(f"this test publishes nothing, yet {topic} was written")

    return publish


def engine_on(responder: IncidentResponder, policy: Policy, http: aiohttp.ClientSession, *,
              clock: Callable[[], datetime], publish: Publish | None = None, attempts: int = 3,
              timeout_s: float = 2.0) -> ContainmentEngine:
    """An engine on the responder's database, driven by the test (`run_due`), its loop not started."""
    engine: ContainmentEngine | None = None

    async def notify(key: str, incident_id: int, owner: Any, note: str) -> bool:
        assert engine is not None
        return await engine.ledger.notify_once(key, incident_id, owner, note, clock())

    services = Services(http=http, publish=publish or no_publish(), notify=notify, secret=secrets.resolve)
    engine = ContainmentEngine(
        responder.store, actions=RUNNABLE, services=services, matrix=lambda: policy.matrix, sealer=Sealer(SEAL_KEY),
        clock=clock, poll_s=0.05, backoff=Backoff(initial_s=1.0, max_s=10.0, attempts=attempts),
        timeout_s=timeout_s, on_change=responder.outbox.wake,
    )
    return engine
