"""The approval-before-action contract: what a gateway asks Warden before a high-risk action, and the answer.

Requests travel on `warden.approval.requests` (keyed by agent id) or `POST /v1/approvals`; answers on
`warden.approval.decisions` (keyed by request id) or `GET /v1/approvals/{id}`. Both transports carry these models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from warden.contract.events import Agent, IdentityChange
from warden.contract.findings import FindingOwners, OwnerRef


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolAction(_Part):
    """A tool call the agent is about to make."""

    name: str = Field(min_length=1, max_length=256, description="Tool name, as the matrix scopes it.")
    arguments: dict[str, Any] | None = Field(None, description="The call's arguments (untrusted; redacted on output).")


class ApprovalRequest(_Part):
    """One action a gateway holds until Warden answers: a tool call or an identity change, never both."""

    request_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                                   description="The gateway's id for it (idempotency key); Warden makes one if "
                                               "absent.")
    correlation_id: str | None = Field(None, max_length=256, description="Echoed in every answer.")
    agent: Agent
    workflow: str | None = Field(None, description="Ignored for routing: the matrix derives it from the agent.")
    session_id: str | None = Field(None, max_length=256)
    principal: str | None = Field(None, max_length=256, description="The human or service the agent acts for.")
    tool: ToolAction | None = None
    identity_change: IdentityChange | None = None

    @model_validator(mode="after")
    def _one_action(self) -> ApprovalRequest:
        if (self.tool is None) == (self.identity_change is None):
            raise ValueError("give exactly one of 'tool' or 'identity_change'")
        return self


class Verdict(StrEnum):
    """What the matrix says about the request."""

    allow = "allow"
    deny = "deny"
    approval_required = "approval_required"


class ApprovalStatus(StrEnum):
    """Where the request stands; only `allowed` and `approved` let the gateway act."""

    allowed = "allowed"
    denied = "denied"
    pending = "pending"
    approved = "approved"
    expired = "expired"


# The two decisions on a request, as the trail records an attempt and as a notifier's buttons name them.
APPROVE, DENY = "warden.approval.approve", "warden.approval.deny"
MAX_WAIT_S = 30.0  # the longest long-poll `GET /v1/approvals/{id}?wait=` may ask for
FINAL = frozenset({ApprovalStatus.allowed, ApprovalStatus.denied, ApprovalStatus.approved, ApprovalStatus.expired})
PROCEED = frozenset({ApprovalStatus.allowed, ApprovalStatus.approved})


class ApprovalAnswer(BaseModel):
    """Warden's answer, on `warden.approval.decisions` and over HTTP; the latest one for a request id wins."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    correlation_id: str | None = None
    agent_id: str
    workflow: str | None = None
    verdict: Verdict
    status: ApprovalStatus
    rule: str | None = Field(None, description="The rule that denied it, or that requires the approval.")
    reason: str = ""
    evidence: dict[str, str] = Field(default_factory=dict, description="Redacted, as on a finding.")
    approver: str | None = Field(None, description="The owner id whose approval is required.")
    decided_by: str | None = Field(None, description="The owner id who approved or denied.")
    requested_at: datetime
    decided_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None


@dataclass(frozen=True)
class Judgement:
    """The verdict on a request with its located reason; `approval_from`, `approver` and `chain` only for
    approval_required. Made by the pure stage (streams.verdict), recorded by the responders."""

    verdict: Verdict
    workflow: str | None
    rule: str | None = None
    reason: str = ""
    evidence: dict[str, str] = field(default_factory=dict)
    owners: FindingOwners | None = None
    approval_from: str | None = None
    approver: str | None = None
    timeout: timedelta = timedelta(minutes=15)
    target: str = ""
    chain: tuple[OwnerRef, ...] = ()
    """Who is asked, in order: the named approver first, then the escalation steps."""
    decides: tuple[bool, ...] = ()
    """Per owner of `chain`: whether they may decide, or are only told that the approver has not answered."""
