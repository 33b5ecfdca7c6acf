"""What an owner may do to an incident outside Slack (the incident API, the CLI's break-glass database access): move
its lifecycle or decide its containment, authorised against the frozen owners exactly like a click, refusals
recorded on its timeline. One place, so the API and the break-glass path cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from responders.incidents import ACTIVE, Action, Status, TransitionError, approvers, authorise_owner, check_transition
from responders.store.rooms import Store
from warden.contract.actors import API, BREAK_GLASS, WARDEN_AUTHENTICATED, Actor

__all__ = ["ACTIONS", "API", "BREAK_GLASS", "WARDEN_AUTHENTICATED", "Outcome", "Result", "act"]

LIFECYCLE: dict[str, tuple[Action, Status]] = {
    "ack": (Action.acknowledge, Status.acknowledged),
    "resolve": (Action.resolve, Status.resolved),
    "false_positive": (Action.false_positive, Status.false_positive),
}
CONTAINMENT: dict[str, Action] = {"approve": Action.approve, "deny": Action.deny, "release": Action.release}
ACTIONS = (*LIFECYCLE, *CONTAINMENT)


class Result(StrEnum):
    """How an owner's request ended; the API maps each to its HTTP status, the CLI to its exit code."""

    done = "done"
    forbidden = "forbidden"
    not_found = "not_found"
    conflict = "conflict"


@dataclass(frozen=True)
class Outcome:
    """The result, a sentence for people, and the incident's status afterwards (None when it does not exist)."""

    result: Result
    message: str
    status: str | None = None


async def act(store: Store, incident_id: int, action: str, owner_id: str, *, actor: Actor,
              now: datetime) -> Outcome:
    """Do `action` (one of ACTIONS) on the incident as `owner_id`, whom the caller authenticated as `actor`
    (notifier `api` with the token's fingerprint, `break-glass` with the unix user)."""
    view = await store.incidents.incident(incident_id)
    if view is None:
        return Outcome(Result.not_found, f"incident #{incident_id} does not exist")
    via, identity = actor.notifier, actor.identity
    claimed = Actor(actor.notifier, f"{actor.user}:{owner_id}", actor.address)  # a refusal names whom it claimed
    if action in LIFECYCLE:
        kind, target = LIFECYCLE[action]
        owner = authorise_owner(kind, view.owners, owner_id, view.approval_level)
        if owner is None:
            reason = f"{owner_id} is not the responder or on the escalation chain of incident #{incident_id}"
            await store.decisions.record_refusal(incident_id, f"{via}.{kind.value}", claimed, reason, now)
            return Outcome(Result.forbidden, f"refused: {reason}; the attempt was recorded", view.status.value)
        try:
            check_transition(view.status, target)
        except TransitionError as exc:
            return Outcome(Result.conflict, f"incident #{incident_id}: {exc}", view.status.value)
        note = f"{target.value.replace('_', ' ').capitalize()} by {owner.name or owner.id} ({via})."
        if not await store.incidents.transition(incident_id, view.status, target, owner=owner, by=actor,
                                                note=note,
                                                now=now):
            return Outcome(Result.conflict, f"incident #{incident_id} changed meanwhile; nothing was done",
                           view.status.value)
        return Outcome(Result.done, f"incident #{incident_id} is {target.value}, by {owner.id}", target.value)
    kind = CONTAINMENT[action]
    allowed = {o.id: o for o in approvers(view.owners, view.approval_level)}
    approver = allowed.get(owner_id)
    status = view.status.value
    if approver is None:
        names = ", ".join(allowed) or "nobody (no approver is named)"
        reason = f"only {names} may {action} incident #{incident_id}"
        await store.decisions.record_refusal(incident_id, f"{via}.{action}", claimed, reason, now)
        return Outcome(Result.forbidden, f"refused: {reason}; the attempt was recorded", status)
    if kind is Action.release:
        if not view.quarantined:
            return Outcome(Result.conflict, f"incident #{incident_id}: no quarantine in effect to release", status)
        done = await store.decisions.request_release(incident_id, owner=approver, via=via, identity=identity, now=now)
        return (Outcome(Result.done, f"release of incident #{incident_id} recorded; the workers publish it", status)
                if done else Outcome(Result.conflict, f"incident #{incident_id}: a release is already recorded",
                                     status))
    if view.status not in ACTIVE or not view.awaiting_approval or view.decision is not None:
        return Outcome(Result.conflict, f"incident #{incident_id}: {view.containment_status}", status)
    decision = "approve" if kind is Action.approve else "deny"
    done = await store.decisions.decide(incident_id, decision, owner=approver, by=actor,
                                        note=f"Containment {decision}d by {approver.name or approver.id} ({via}).",
                                        now=now)
    if not done:
        return Outcome(Result.conflict, f"incident #{incident_id} changed meanwhile; nothing was recorded", status)
    return Outcome(Result.done, f"incident #{incident_id}: containment {decision}d as {approver.id}; the workers "
                   "act on it", status)
