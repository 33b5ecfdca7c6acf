"""The incident's pure core: its key, when a repeat joins it, the lifecycle, escalation deadlines, who may act."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from warden.contract.actors import Actor
from warden.contract.findings import EscalationRef, FindingOwners, OwnerRef


class Status(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"
    false_positive = "false_positive"


ACTIVE = frozenset({Status.open, Status.acknowledged})

# Lifecycle: open → acknowledged → resolved, and false_positive from either active state. An open incident cannot
# be resolved: someone takes it (acknowledges, which stops the escalation) before closing it, so the timeline
# always names who owned it; Slack offers Resolve only once acknowledged.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.open: frozenset({Status.acknowledged, Status.false_positive}),
    Status.acknowledged: frozenset({Status.resolved, Status.false_positive}),
    Status.resolved: frozenset(),
    Status.false_positive: frozenset(),
}


class Action(StrEnum):
    """What an owner asks for (a notifier's button, the API, the CLI); the value is the button's action_id."""

    acknowledge = "warden.acknowledge"
    resolve = "warden.resolve"
    false_positive = "warden.false_positive"
    approve = "warden.approve"
    deny = "warden.deny"
    release = "warden.release"
    silence = "warden.silence"  # mute the incident's group (or its rule and agent) for an hour


# Buttons that move the lifecycle, and the status each one moves to.
LIFECYCLE_ACTIONS: dict[Action, Status] = {
    Action.acknowledge: Status.acknowledged,
    Action.resolve: Status.resolved,
    Action.false_positive: Status.false_positive,
}
# Buttons that decide the containment gate, and the decision recorded.
CONTAINMENT_ACTIONS: dict[Action, str] = {Action.approve: "approve", Action.deny: "deny"}


class StepStatus(StrEnum):
    """Where one containment step is in the ledger."""

    proposed = "proposed"  # waits for the approver
    approved = "approved"  # may run (auto, or approved); also a step waiting for its next attempt
    executing = "executing"  # a run may be in flight: committed before the effect
    done = "done"
    failed = "failed"
    denied = "denied"
    cancelled = "cancelled"  # the incident closed first, or an earlier step failed and the playbook stopped
    dry_run = "dry_run"  # recorded what it would do, did nothing


STEP_ENDED = frozenset({StepStatus.done, StepStatus.failed, StepStatus.denied, StepStatus.cancelled,
                        StepStatus.dry_run})


class TransitionError(ValueError):
    """A lifecycle move the current status does not allow."""


def incident_key(rule: str, agent_id: str, target: str) -> str:
    """Repeats of one rule by one agent on one target share a key, so they group into one incident."""
    return hashlib.sha256(json.dumps([rule, agent_id, target]).encode()).hexdigest()  # unambiguous joins


def joins(last_seen: datetime, finding_ts: datetime, window_s: float) -> bool:
    """A finding joins the active incident when it happened within the group window of the last repeat."""
    return finding_ts - last_seen <= timedelta(seconds=window_s)


def check_transition(current: Status, target: Status) -> None:
    if target not in TRANSITIONS[current]:
        raise TransitionError(f"an incident that is {current.value} cannot become {target.value}")


def escalation_deadline(chain: list[EscalationRef], step: int, step_started: datetime) -> datetime | None:
    """When step `step` of the chain times out without an acknowledgement; None once the chain is exhausted."""
    if step >= len(chain):
        return None
    return step_started + chain[step].ack_timeout


def escalation_note(owners: FindingOwners, step: int) -> str:
    """Why step `step` of the chain is being called, for the timeline and the message."""
    chain = owners.escalation
    if step == 0:
        return f"first on the escalation chain (step 1 of {len(chain)})"
    waited = int(chain[step - 1].ack_timeout.total_seconds())
    within = f"{waited // 60}m" if waited >= 60 else f"{waited}s"
    return f"step {step + 1} of {len(chain)}: not acknowledged within {within} of step {step}"


def approvers(owners: FindingOwners, level: int) -> list[OwnerRef]:
    """Who may approve containment once the approval has climbed `level` steps: the named approver, then each
    escalation step marked `approves`, in chain order."""
    chain = [owners.approver, *(step.owner for step in owners.escalation if step.approves)]
    return [o for o in chain[: level + 1] if o is not None]


def authorise(action: Action, owners: FindingOwners, notifier: str, identity: str,
              approval_level: int = 0) -> OwnerRef | None:
    """The frozen owner a click acts for, or None when this identity may not take this action.

    The responder and anyone on the escalation chain may acknowledge, resolve or mark a false positive; only the
    named approver (or, once the approval timed out and climbed, the chain's approving owners) may approve or deny
    containment, or release a quarantine. The notifier checks that `identity` is a person.
    """
    return next((o for o in _candidates(action, owners, approval_level) if o.may_act_as(notifier, identity)), None)


def authorise_owner(action: Action, owners: FindingOwners, owner_id: str, approval_level: int = 0) -> OwnerRef | None:
    """The frozen owner with this id, if that owner may take this action (the same rule as `authorise`), for
    callers that authenticate an owner directly, such as the incident API's bearer tokens."""
    return next((o for o in _candidates(action, owners, approval_level) if o.id == owner_id), None)


def _candidates(action: Action, owners: FindingOwners, approval_level: int) -> list[OwnerRef]:
    if action in CONTAINMENT_ACTIONS or action is Action.release:
        return list(approvers(owners, approval_level))
    if action is Action.silence:  # muting people is the responder's or the workflow's approver's call
        return [o for o in (owners.responder, owners.approver) if o is not None]
    return [owners.responder, *(step.owner for step in owners.escalation)]


@dataclass(frozen=True)
class Decision:
    """The containment decision for an incident, as recorded for the playbooks."""

    decision: str
    owner_id: str
    by: Actor  # the approver's identity on the channel the decision came through
    at: datetime


@dataclass(frozen=True)
class StepView:
    """One containment step as responders see it."""

    playbook: str
    step: int
    action: str
    status: str
    gate: str
    dry_run: bool
    does: str | None = None


@dataclass(frozen=True)
class IncidentView:
    """A read-only snapshot of one incident: what renderers and notifiers work from."""

    id: int
    key: str
    status: Status
    rule: str
    severity: str
    title: str
    agent_id: str
    workflow: str | None
    target: str
    frameworks: tuple[str, ...]
    evidence: dict[str, str]
    owners: FindingOwners
    count: int
    first_seen: datetime
    last_seen: datetime
    opened_at: datetime
    escalation_step: int
    policy_sha256: str
    status_by: str | None = None
    decision: Decision | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    containment: tuple[StepView, ...] = ()
    approval_level: int = 0
    group_id: int | None = None
    group_role: str | None = None

    @property
    def awaiting_approval(self) -> tuple[StepView, ...]:
        """The steps an approval would run now (none: no Approve/Deny buttons)."""
        return tuple(s for s in self.containment if s.status == StepStatus.proposed.value)

    @property
    def quarantined(self) -> bool:
        """A quarantine took effect and was not released (a Release button is due)."""
        done = [s for s in self.containment if s.status == StepStatus.done.value]
        return any(s.action == "quarantine_agent" for s in done) and not any(s.action == "release" for s in done)

    @property
    def containment_status(self) -> str:
        """The containment ledger in one line, as a responder should read it."""
        if not self.containment:
            return "no playbook bound to this finding"
        counts = Counter(s.status for s in self.containment)
        states = ", ".join(f"{n} {status}" for status, n in counts.items())
        if self.decision is not None:
            verb = "approved" if self.decision.decision == "approve" else "denied"
            return f"containment {verb} by {self.decision.owner_id}: {states}"
        if self.awaiting_approval:
            if self.status not in ACTIVE:
                return f"closed ({self.status.value}) without a containment decision: {states}"
            who = " or ".join(o.name or o.id for o in approvers(self.owners, self.approval_level))
            return f"awaiting approval by {who or 'nobody: no approver is named'}: {states}"
        return states
