"""A small, explicit matrix and event factory for the pure detector tests (no broker, no files)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from service.runtime.catalogue import CATALOGUE
from warden.contract.events import ActivityEvent
from warden.contract.matrix import Matrix
from warden.policy import Policy, build_policy

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

BASE: dict[str, Any] = {
    "defaults": {"security_owner": "secops", "escalation": [{"owner": "secops", "ack_timeout": "15m"},
                                                             {"owner": "ciso", "ack_timeout": "30m"}]},
    "owners": {
        "secops": {"name": "Security Operations", "kind": "team", "contacts": {"slack": "C0SECOPS"}},
        "ciso": {"name": "CISO", "contacts": {"slack": "U0CISO"}},
        "jordan": {"name": "Jordan", "contacts": {"slack": "U0JORDAN"}},
        "marco": {"name": "Marco", "contacts": {"slack": "U0MARCO"}},
        "iam-team": {"name": "IAM", "kind": "team", "contacts": {"slack": "C0IAM"}},
        "data-gov": {"name": "Data Governance", "kind": "team", "contacts": {"slack": "C0DATAGOV"}},
    },
    "workflows": {
        # Agentic: every violation is raised one severity level.
        "provisioner": {
            "agents": ["iam-agent"], "risk": "critical", "mode": "agentic",
            "approver": "jordan", "detector": "secops", "responder": "iam-team",
            "business_owner": "marco", "data_owner": "data-gov",
            "escalation": [{"owner": "iam-team", "ack_timeout": "5m"}, {"owner": "ciso", "ack_timeout": "10m"}],
            "scope": {
                "tools": ["directory.lookup_user", "directory.grant_role", "crm.read_*"],
                "data": ["ldap://people/*"],
                "max_classification": "confidential",
                "secrets": ["vault://iam/*"],
                "identity_changes": {"require_approval": ["grant_*", "create_key"], "window": "30m"},
                "limits": {"tool_calls": {"max": 5, "window": "1m"},
                           "identical_retries": {"max": 3, "window": "5m"}},
            },
        },
        # Chat, low risk: can be exempted from a rule.
        "helpdesk": {
            "agents": ["help-bot"], "risk": "low", "mode": "chat",
            "approver": "marco", "detector": "secops", "responder": "data-gov",
            "scope": {
                "tools": ["kb.search"],
                "data": ["kb://public/*", "repo://docs/*"],
                "max_classification": "internal",
                "limits": {"tool_calls": {"max": 2, "window": "1m"}},
            },
        },
        # Chat, high risk: the same chat mode, but not exempt.
        "research": {
            "agents": ["rag-bot"], "risk": "high", "mode": "chat",
            "approver": "marco", "detector": "secops", "responder": "data-gov",
            "scope": {"tools": ["retrieval.*"], "data": ["s3://approved/*"], "max_classification": "internal"},
        },
    },
}


def policy(**changes: Any) -> Policy:
    """The base matrix with top-level sections replaced or, for `rules`, set; compiled like a loaded policy."""
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return build_policy(Matrix.model_validate(doc), CATALOGUE, sha256="sha-test")


def with_scope(workflow: str, **scope: Any) -> Policy:
    doc = copy.deepcopy(BASE)
    doc["workflows"][workflow]["scope"].update(scope)
    return build_policy(Matrix.model_validate(doc), CATALOGUE, sha256="sha-test")


_counter = iter(range(1_000_000))


def ev(kind: str, agent: str, at: float = 0.0, **fields: Any) -> ActivityEvent:
    """An event `at` seconds after T0, with a fresh id unless `event_id` is given."""
    doc: dict[str, Any] = {
        "event_id": f"e{next(_counter)}",
        "ts": (T0 + timedelta(seconds=at)).isoformat(),
        "kind": kind,
        "agent": {"id": agent},
    }
    doc.update(fields)
    return ActivityEvent.model_validate(doc)


def tool(agent: str, name: str, at: float = 0.0, **fields: Any) -> ActivityEvent:
    return ev("tool_call", agent, at, tool={"name": name, **fields.pop("tool", {})}, **fields)


def approval(agent: str, approver: str, ref: str, at: float = 0.0, decision: str = "approved") -> ActivityEvent:
    return ev("approval", agent, at, approval={"approver": approver, "decision": decision, "ref": ref})


def change(agent: str, target: str, at: float = 0.0, operation: str = "grant_role", **fields: Any) -> ActivityEvent:
    return ev("identity_change", agent, at,
              identity_change={"operation": operation, "target": target, "entitlement": "admins"}, **fields)
