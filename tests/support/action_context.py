"""A real StepContext for calling one containment action's `run` directly, as the engine would for one attempt:
a hand-built incident, a small matrix, a real aiohttp session and the real secret resolver (env:/file:)."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from playbooks.actions.base import Credential, Services, StepContext
from responders.incidents import IncidentView, Status
from warden.contract.containment import Issuer
from warden.contract.findings import FindingOwners, OwnerRef
from warden.contract.matrix import Defaults, Matrix
from warden.kit.secrets import resolve

OPENED = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def incident(agent_id: str = "billing-agent", target: str = "prod-db") -> IncidentView:
    """An open critical incident, as the incident store would hand it to the engine."""
    owner = OwnerRef(id="secops", name="SecOps", kind="team", contacts={"slack": "C0SECOPS"})
    return IncidentView(
        id=42, key="inc-key-42", status=Status.open, rule="secret_out_of_scope", severity="critical",
        title="Agent read a secret outside its scope", agent_id=agent_id, workflow="billing", target=target,
        frameworks=("OWASP-ASI03",), evidence={"tool": "vault.read"},
        owners=FindingOwners(approver=owner, responder=owner), count=1, first_seen=OPENED, last_seen=OPENED,
        opened_at=OPENED, escalation_step=0, policy_sha256="0" * 64,
    )


def matrix(issuers: dict[str, Issuer] | None = None) -> Matrix:
    return Matrix(defaults=Defaults(security_owner="secops"), issuers=issuers or {})


async def _unused_publish(topic: str, key: bytes, value: bytes | None) -> None:
    raise AssertionError("this action must not publish")


async def _unused_notify(key: str, incident_id: int, owner: OwnerRef, note: str) -> bool:
    raise AssertionError("this action must not notify")


def context(
    http: aiohttp.ClientSession, *, key: str = "wh-42-contain-0", credential: Credential | None = None,
    issuers: dict[str, Issuer] | None = None, attempt: int = 1, timeout_s: float = 5.0,
    agent_id: str = "billing-agent", target: str = "prod-db",
) -> StepContext:
    """One attempt of step 0 of the `contain` playbook for incident 42."""
    return StepContext(
        key=key, incident=incident(agent_id, target), playbook="contain", index=0, attempt=attempt,
        credential=credential, matrix=matrix(issuers),
        services=Services(http=http, publish=_unused_publish, notify=_unused_notify, secret=resolve),
        timeout_s=timeout_s,
    )
