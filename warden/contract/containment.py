"""Containment as data: playbooks (ordered steps), gates, OAuth issuers, and the plan a finding carries."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SECRET_REF = r"^(env|file):\S+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gate(StrEnum):
    """Who lets a playbook run: nobody needs to (`auto`), the workflow's approver, or auto only when critical."""

    auto = "auto"
    approver = "approver"
    auto_if_critical = "auto_if_critical"


class OnFailure(StrEnum):
    """What a step that failed for good does to the rest: every failure is alerted to the responder; `escalate`
    also calls the escalation chain and stops, `stop` stops, `continue` runs the next step anyway."""

    escalate = "escalate"
    stop = "stop"
    continue_ = "continue"


class PlaybookStep(_Strict):
    """One action with its parameters; each action validates its own parameters (`playbooks.actions`)."""

    action: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class Playbook(_Strict):
    """Ordered containment steps. Shipped ones live in `playbooks/library/`; a policy may add or replace them."""

    description: str = ""
    steps: list[PlaybookStep] = Field(min_length=1)
    on_failure: OnFailure = OnFailure.escalate
    dry_run: bool = Field(False, description="Record what each step would do, and do nothing.")


class Issuer(_Strict):
    """An OAuth 2.0 authorisation server whose tokens Warden may revoke (RFC 7009) and introspect (RFC 7662)."""

    issuer: str = Field(min_length=1, description="The issuer URL, as events carry it in `credential.issuer`.")
    revocation_endpoint: str = Field(pattern=r"^https?://")
    introspection_endpoint: str | None = Field(None, pattern=r"^https?://")
    client_id: str = Field(min_length=1)
    client_secret: str = Field(pattern=SECRET_REF, description="A reference, never the secret: env:VAR or file:PATH.")


class Plan(BaseModel):
    """A playbook bound to a finding at detection time, frozen like its owners: later policy edits never change
    what an open incident's approval runs. `gate` is resolved (`auto_if_critical` became `auto` or `approver`)."""

    model_config = ConfigDict(frozen=True)

    playbook: str
    gate: Gate
    approval_timeout: timedelta
    on_failure: OnFailure
    dry_run: bool
    steps: list[PlaybookStep]


class CredentialRef(BaseModel):
    """The credential an agent used, as a finding may carry it: its token only sealed (`warden.kit.sealing`)."""

    model_config = ConfigDict(frozen=True)

    id: str | None = None
    issuer: str | None = None
    sealed_token: str | None = Field(None, description="Fernet-sealed token, for a revocation step; never clear.")


class QuarantineMark(BaseModel):
    """An agent quarantined on `warden.control` and not released: later activity from it is a breach."""

    model_config = ConfigDict(frozen=True)

    agent_id: str
    since: datetime
    incident_id: int | None = None
