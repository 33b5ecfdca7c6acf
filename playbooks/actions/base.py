"""The containment action interface (Falco Talon's actionner shape): typed parameters, lint checks, one run.

An action is one module holding one class with this shape, plus one line in `playbooks.actions.ACTIONS`. The
engine owns everything around a run: the gate, the ledger, retries with backoff, timeouts, escalation. An action
makes one attempt and either returns what it did (for the timeline; never a secret) or raises `ActionFailed`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict

from responders.incidents import IncidentView
from warden.contract.findings import OwnerRef
from warden.contract.matrix import Matrix


class ActionFailed(Exception):
    """One attempt failed. `retryable=False` means more attempts cannot help (a bad parameter, a 4xx)."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class Credential:
    """The credential the finding named. `token` is opened only for an action that `uses_token`."""

    id: str | None
    issuer: str | None
    token: str | None = field(default=None, repr=False)


Publish = Callable[[str, bytes, bytes | None], Awaitable[None]]
"""(topic, key, value or None for a tombstone): returns once the broker has acknowledged the record."""
Notify = Callable[[str, int, OwnerRef, str], Awaitable[bool]]
"""(effect key, incident id, owner, note): records an outbox notification once per key; False when it was
recorded before."""


@dataclass(frozen=True)
class Services:
    """What actions reach the world through; the engine builds it once per worker."""

    http: aiohttp.ClientSession
    publish: Publish
    notify: Notify
    secret: Callable[[str], str]
    """Resolves a secret reference (`env:VAR`, `file:PATH`); raises `warden.kit.secrets.SecretUnavailable`."""
    control_topic: str = "warden.control"
    revocations_topic: str = "warden.revocations"


@dataclass(frozen=True)
class StepContext:
    """One attempt of one step. `key` is stable for this incident, playbook and step across attempts, restarts
    and workers: it is the effect's idempotency key (a webhook's `webhook-id`)."""

    key: str
    incident: IncidentView
    playbook: str
    index: int
    attempt: int
    credential: Credential | None
    matrix: Matrix
    services: Services
    timeout_s: float = 10.0
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    decided_by: str | None = None
    """The owner whose approval let this step run (`warden` for an auto gate)."""


class NoParams(BaseModel):
    """The parameters of an action that takes none: any given is a lint error."""

    model_config = ConfigDict(extra="forbid")


class Unchecked:
    """For an action whose parameter model says all there is to check: nothing more against the matrix."""

    def check(self, params: Any, matrix: Matrix) -> list[tuple[str, str]]:
        return []


class Action(Protocol):
    """A containment action. `Params` validates the step's `params` at lint time and again before each run."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    idempotent: ClassVar[bool]
    """True when running it twice has the effect of running it once: the engine may retry an interrupted run."""
    uses_token: ClassVar[bool]
    """True when it needs the credential's token opened (the finding's sealed token)."""

    def check(self, params: Any, matrix: Matrix) -> list[tuple[str, str]]:
        """Lint-time checks beyond the parameter model, against the matrix: (parameter path, reason) pairs."""
        ...

    def describe(self, params: Any) -> str:
        """What it will do, in one line: shown on the approval message and recorded for a dry run."""
        ...

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        """One attempt. Returns the timeline detail (no secrets); raises ActionFailed."""
        ...
