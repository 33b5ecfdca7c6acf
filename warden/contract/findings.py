"""What a detector says about an event: the contract on `warden.findings`, keyed by agent id."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from warden.contract.containment import CredentialRef, Plan
from warden.contract.matrix import Mode, Owner, Severity, Tier


class OwnerRef(BaseModel):
    """An owner as it was named when the finding was made: id, name and how each notifier reaches them."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = None
    kind: Literal["person", "team"] = "person"
    contacts: dict[str, str] = Field(default_factory=dict, description="Address per notifier.")
    members: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="For a team, per notifier: the identities who may act for it."
    )

    @classmethod
    def of(cls, owner_id: str, owner: Owner) -> OwnerRef:
        return cls(id=owner_id, name=owner.name, kind=owner.kind, contacts=dict(owner.contacts),
                   members={n: tuple(ids) for n, ids in owner.members.items()})

    def contact(self, notifier: str) -> str | None:
        return self.contacts.get(notifier)

    def may_act_as(self, notifier: str, identity: str) -> bool:
        """A person acts as their own contact on a notifier; a team only through the members listed for it there
        (its own contact is a channel, which never acts)."""
        if self.kind == "team":
            return identity in self.members.get(notifier, ())
        return identity == self.contacts.get(notifier)


class EscalationRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    owner: OwnerRef
    ack_timeout: timedelta
    approves: bool = False


class FindingOwners(BaseModel):
    """The named roles, frozen at detection time so later policy edits never re-route an open incident."""

    model_config = ConfigDict(frozen=True)

    approver: OwnerRef | None = None
    detector: OwnerRef | None = None
    responder: OwnerRef
    business_owner: OwnerRef | None = None
    data_owner: OwnerRef | None = None
    escalation: list[EscalationRef] = Field(default_factory=list)


class Finding(BaseModel):
    """One out-of-scope action, with everything a responder needs and nothing secret."""

    model_config = ConfigDict(frozen=True)

    finding_id: str = Field(description="sha256(event_id, rule), so a replayed event yields the same id.")
    rule: str
    severity: Severity
    title: str
    frameworks: list[str] = Field(description="OWASP ASI/LLM ids and the NIST AI RMF function.")
    agent_id: str
    workflow: str | None = Field(description="None when no workflow lists the agent.")
    mode: Mode | None = None
    event_id: str
    event_kind: str
    session_id: str | None = None
    ts: datetime = Field(description="When the event happened.")
    target: str = Field(description="The tool, resource, secret or identity acted on; part of the incident key.")
    evidence: dict[str, str] = Field(default_factory=dict, description="Redacted, truncated evidence.")
    owners: FindingOwners
    policy_sha256: str
    shadow: bool = Field(False, description="Made by a shadow-mode rule: recorded, never routed.")
    tags: list[str] = Field(default_factory=list)
    group_window_s: float = Field(3600.0, description="Repeats within this many seconds join one incident.")
    containment: list[Plan] = Field(default_factory=list, description="Playbooks bound to it, frozen at detection.")
    credential: CredentialRef | None = Field(None, description="The credential used; its token only sealed.")
    tier: Tier = Field(Tier.page, description="How it reaches people: page, review (the periodic digest) or log.")
    approval_tier: Tier = Field(Tier.page, description="What the same finding does on the approval path: page "
                                "denies, hold asks the approver, review and log allow.")


def finding_id(event_id: str, rule: str) -> str:
    return hashlib.sha256(f"{event_id}\0{rule}".encode()).hexdigest()
