"""The example matrix with approval chains that climb (access-provisioner: iam-team, then the CISO, marked
`approves`; billing-agent: finance-ops marked `approves`, then secops), a gated tool category (payment) and a
custom `gate: approval` rule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from service.runtime.catalogue import CATALOGUE
from tests.support.incident_helpers import POLICY
from warden.contract.matrix import Matrix
from warden.policy import Policy, build_policy

GRANT = {"agent": {"id": "iam-agent-1"}, "correlation_id": "corr-1", "session_id": "s-1",
         "identity_change": {"operation": "grant_role", "target": "user:kim", "entitlement": "finance-readonly"}}


def approval_policy(timeout: timedelta = timedelta(minutes=5)) -> Policy:
    m: dict[str, Any] = POLICY.matrix.model_dump(mode="python", exclude_unset=True)
    wf = m["workflows"]["access-provisioner"]
    wf["escalation"] = [{"owner": "iam-team", "ack_timeout": timedelta(minutes=5), "approves": True},
                        {"owner": "ciso", "ack_timeout": timedelta(minutes=10), "approves": True}]
    wf["scope"]["approvals"] = {"timeout": timeout}
    billing = m["workflows"]["billing-agent"]
    billing["escalation"] = [{"owner": "finance-ops", "ack_timeout": timedelta(minutes=10), "approves": True},
                             {"owner": "secops", "ack_timeout": timedelta(minutes=20)}]
    billing["scope"]["approvals"] = {"categories": ["payment"], "timeout": timeout}
    m["rules"]["custom"] = [*m["rules"].get("custom", []), {
        "id": "refund-needs-approval", "gate": "approval", "severity": "medium",
        "condition": 'event.kind == "tool_call" && event.tool.name == "billing.lookup_invoice"'}]
    return build_policy(Matrix.model_validate(m), CATALOGUE, sha256="a" * 64)
