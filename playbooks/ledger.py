"""The containment ledger's transitions, each one short transaction committed before the effect that follows.

A step moves `proposed → approved → executing → done | failed` (or `denied`, `cancelled`, `dry_run`). `executing`
is written, with a fenced claim and a lease, before an action runs; a step still `executing` when its lease ends
was interrupted (a crash, a kill) and is claimed again as `resumed`: the engine re-runs it only if its action is
idempotent. Every write after a claim names the claim, so a worker whose lease was taken over records nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from responders.db.models import ContainmentDecision, ContainmentStep, Incident
from responders.incidents import ACTIVE, STEP_ENDED, IncidentView, Status, StepStatus, approvers
from responders.store.common import RELEASE, rowcount
from responders.store.notices import NoticeKind
from responders.store.rooms import Store
from responders.store.views import decision_of, steps_of, view_of
from warden.contract.containment import OnFailure
from warden.contract.findings import FindingOwners, OwnerRef


@dataclass(frozen=True)
class ClaimedStep:
    """A step this worker holds the lease on, with what a run needs. `resumed`: it was `executing` when claimed,
    so an earlier run was interrupted and may or may not have taken effect."""

    id: int
    claim: str
    incident: IncidentView
    playbook: str
    index: int
    action: str
    params: dict[str, Any]
    dry_run: bool
    on_failure: OnFailure
    credential: dict[str, Any] | None
    sealed_token: str | None = field(repr=False)
    attempts: int
    resumed: bool
    finding_ts: datetime
    decided_by: str | None

    @property
    def key(self) -> str:
        """Stable for this incident, playbook and step, whoever runs it and however often: the idempotency key."""
        return f"warden-{self.incident.id}-{self.playbook}-{self.index}"


@dataclass(frozen=True)
class Verdict:
    """What consuming one decision did: the incident, and whether the decision was honoured."""

    incident_id: int
    decision: str
    honoured: bool
    steps: int


def _releasable(step: ContainmentStep) -> bool:
    return step.status not in {s.value for s in STEP_ENDED}


class Ledger:
    """The ledger spoken to in the domain's terms; shares the incident store's database and timeline."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sessions = store.sessions

    # -- the gate ----------------------------------------------------------------------------------------------

    async def gate(self, now: datetime) -> tuple[list[Verdict], list[int], int]:
        """One transaction for the gate's three checks (decisions, approval timeouts, closed incidents): on SQLite
        every transaction takes the write lock, and the engine passes often."""
        async with self.sessions.begin() as s:
            return await self._consume(s, now), await self._climb(s, now), await self._cancel(s, now)

    async def _consume(self, s: AsyncSession, now: datetime) -> list[Verdict]:
        """Act on each approval or denial not yet consumed, re-checking now that it came from an owner who may
        approve this incident (the named approver, or one the approval climbed to). A decision that did not is
        refused and audited; its steps keep waiting."""
        verdicts: list[Verdict] = []
        rows = list((await s.execute(
            select(ContainmentDecision).where(ContainmentDecision.consumed_at.is_(None))
            .order_by(ContainmentDecision.id).with_for_update(skip_locked=True)
        )).scalars())
        for decision in rows:
            decision.consumed_at = now
            incident = (await s.execute(
                select(Incident).where(Incident.id == decision.incident_id).with_for_update()
            )).scalar_one()
            owners = FindingOwners.model_validate(incident.owners)
            allowed = {o.id: o for o in approvers(owners, incident.approval_level)}
            approver = allowed.get(decision.owner_id)
            by = decision.via
            # A notifier's user must be one the matrix names for that owner on that notifier (its contact, or a
            # team's members); the API and break-glass paths checked the owner id themselves as they ran.
            if approver is None or (not by.warden_authenticated and not approver.may_act_as(by.notifier, by.user)):
                await self.store.timeline.log_entry(s, incident.id, now, "refused", actor=decision.owner_id,
                                     by=by, detail={
                                         "action": f"containment_{decision.decision}",
                                         "reason": "the decision is not from an owner who may approve it"})
                verdicts.append(Verdict(incident.id, decision.decision, False, 0))
                continue
            waiting = [st for st in await steps_of(s, incident.id)
                       if st.status == StepStatus.proposed.value]
            approve = decision.decision == "approve"
            for step in waiting:
                step.status = (StepStatus.approved if approve else StepStatus.denied).value
                step.decided_by = approver.id
                step.updated_at = now
                step.next_attempt_at = now
                if not approve:
                    step.sealed_token, step.ended_at = None, now
            incident.approval_due_at = None
            await self.store.timeline.log_entry(s, incident.id, now, "containment_steps_approved" if approve
                                 else "containment_steps_denied", actor=approver.id,
                                 by=by,
                                 detail={"steps": [f"{st.playbook}[{st.step}] {st.action}" for st in waiting]})
            verdicts.append(Verdict(incident.id, decision.decision, True, len(waiting)))
        return verdicts

    async def _climb(self, s: AsyncSession, now: datetime) -> list[int]:
        """Incidents whose approval timed out: the next owner of the chain who approves is asked (and may approve
        from now on); when there is none, the steps keep waiting for those already asked. Returns the incidents
        whose approval climbed."""
        climbed: list[int] = []
        due = list((await s.execute(
            select(Incident).where(Incident.approval_due_at <= now).with_for_update(skip_locked=True)
        )).scalars())
        for incident in due:
            waiting = [st for st in await steps_of(s, incident.id)
                       if st.status == StepStatus.proposed.value]
            if not waiting or Status(incident.status) not in ACTIVE:
                incident.approval_due_at = None
                continue
            owners = FindingOwners.model_validate(incident.owners)
            chain = approvers(owners, len(owners.escalation) + 1)
            level = incident.approval_level + 1
            waited = int(min(st.approval_timeout_s for st in waiting))
            if level >= len(chain):
                incident.approval_due_at = None
                await self.store.timeline.log_entry(s, incident.id, now, "approval_unanswered", detail={
                    "waited_s": waited, "asked": [o.id for o in chain]})
                continue
            incident.approval_level = level
            incident.approval_due_at = now + timedelta(seconds=waited)
            target = chain[level]
            note = (f"containment awaits an approval: not approved within {waited}s by "
                    + " or ".join(o.name or o.id for o in chain[:level]))
            await self.store.timeline.log_entry(s, incident.id, now, "approval_escalated",
                                 detail={"to": target.id, "level": level, "why": note})
            await self.store.outbox.add_notifications(s, incident.id, NoticeKind.escalation, target, now=now, note=note)
            climbed.append(incident.id)
        return climbed

    async def _cancel(self, s: AsyncSession, now: datetime) -> int:
        """Steps still waiting for an approval when their incident was closed will never be approved: cancel them
        (and drop their sealed tokens). Approved steps of a closed incident still run."""
        rows = list((await s.execute(
            select(ContainmentStep).join(Incident, Incident.id == ContainmentStep.incident_id).where(
                ContainmentStep.status == StepStatus.proposed.value,
                Incident.status.not_in([st.value for st in ACTIVE]),
            ).with_for_update(of=ContainmentStep, skip_locked=True)
        )).scalars())
        for step in rows:
            step.status, step.sealed_token, step.ended_at, step.updated_at = (
                StepStatus.cancelled.value, None, now, now)
            await self.store.timeline.log_entry(s, step.incident_id, now, "containment_step_cancelled", detail={
                "playbook": step.playbook, "step": step.step, "action": step.action,
                "why": "the incident closed before an approval"})
        return len(rows)

    # -- running -----------------------------------------------------------------------------------------------

    async def claim(self, now: datetime, lease: timedelta, limit: int = 10) -> list[ClaimedStep]:
        """Take the lease on steps that may run now, each marked `executing` (committed before its effect): approved
        steps that are due and whose earlier steps are over, and steps whose run was interrupted."""
        token = uuid.uuid4().hex
        claimed: list[ClaimedStep] = []
        async with self.sessions.begin() as s:
            rows = list((await s.execute(
                select(ContainmentStep).where(
                    ContainmentStep.status.in_([StepStatus.approved.value, StepStatus.executing.value]),
                    ContainmentStep.next_attempt_at <= now,
                    ContainmentStep.claimed_until.is_(None) | (ContainmentStep.claimed_until <= now),
                ).order_by(ContainmentStep.id).limit(limit * 4).with_for_update(skip_locked=True)
            )).scalars())
            for step in rows:
                if len(claimed) >= limit or not await self._turn(s, step):
                    continue
                resumed = step.status == StepStatus.executing.value
                step.status = StepStatus.executing.value
                step.attempts += 1
                step.claim, step.claimed_until, step.updated_at = token, now + lease, now
                incident = await s.get(Incident, step.incident_id)
                assert incident is not None  # a foreign key
                view = view_of(incident, await decision_of(s, incident.id),
                             await steps_of(s, incident.id))
                claimed.append(ClaimedStep(
                    id=step.id, claim=token, incident=view, playbook=step.playbook, index=step.step,
                    action=step.action, params=dict(step.params), dry_run=step.dry_run,
                    on_failure=OnFailure(step.on_failure), credential=step.credential,
                    sealed_token=step.sealed_token, attempts=step.attempts, resumed=resumed,
                    finding_ts=step.finding_ts, decided_by=step.decided_by,
                ))
        return claimed

    async def _turn(self, s: AsyncSession, step: ContainmentStep) -> bool:
        """A step runs after the earlier steps of its playbook: each done, dry-run, or failed with `continue`."""
        if step.step == 0:
            return True
        earlier = (await s.execute(select(ContainmentStep.status, ContainmentStep.on_failure).where(
            ContainmentStep.incident_id == step.incident_id, ContainmentStep.playbook == step.playbook,
            ContainmentStep.step < step.step,
        ))).all()
        over = {StepStatus.done.value, StepStatus.dry_run.value}
        return all(status in over or (status == StepStatus.failed.value and how == OnFailure.continue_.value)
                   for status, how in earlier)

    @staticmethod
    def _held(step: ClaimedStep) -> ColumnElement[bool]:
        return ((ContainmentStep.id == step.id) & (ContainmentStep.claim == step.claim)
                & (ContainmentStep.status == StepStatus.executing.value))

    async def done(self, step: ClaimedStep, detail: dict[str, str], now: datetime, *,
                   dry_run: bool = False) -> bool:
        """The effect happened (or, for a dry run, was only described): recorded once, the sealed token dropped.
        False when the claim was lost (another worker holds the step now)."""
        status = StepStatus.dry_run if dry_run else StepStatus.done
        async with self.sessions.begin() as s:
            if rowcount(await s.execute(update(ContainmentStep).where(self._held(step)).values(
                status=status.value, detail=detail, sealed_token=None, claim=None, claimed_until=None,
                last_error=None, ended_at=now, updated_at=now,
            ))) != 1:
                return False
            await self.store.timeline.log_entry(s, step.incident.id, now, f"containment_step_{status.value}", detail={
                "playbook": step.playbook, "step": step.index, "action": step.action, "attempts": step.attempts,
                **detail})
            if step.action == RELEASE:
                responder = step.incident.owners.responder
                await self.store.outbox.add_notifications(s, step.incident.id, NoticeKind.update, responder, now=now,
                                                          note="Quarantine released.")
            return True

    async def retry(self, step: ClaimedStep, error: str, at: datetime, now: datetime) -> bool:
        """The attempt failed and another may help: due again at `at`, still approved."""
        async with self.sessions.begin() as s:
            if rowcount(await s.execute(update(ContainmentStep).where(self._held(step)).values(
                status=StepStatus.approved.value, claim=None, claimed_until=None, last_error=error,
                next_attempt_at=at, updated_at=now,
            ))) != 1:
                return False
            await self.store.timeline.log_entry(s, step.incident.id, now, "containment_step_retry", detail={
                "playbook": step.playbook, "step": step.index, "action": step.action, "attempt": step.attempts,
                "error": error, "next_attempt_at": at.isoformat()})
            return True

    async def fail(self, step: ClaimedStep, error: str, now: datetime) -> bool:
        """The step failed for good: recorded, its token dropped, and a "containment failed" alert to the responder
        (and, with `on_failure: escalate`, the whole escalation chain). Unless the playbook says `continue`, its
        later steps are cancelled. Never dropped silently."""
        async with self.sessions.begin() as s:
            if rowcount(await s.execute(update(ContainmentStep).where(self._held(step)).values(
                status=StepStatus.failed.value, sealed_token=None, claim=None, claimed_until=None,
                last_error=error, ended_at=now, updated_at=now,
            ))) != 1:
                return False
            cancelled: list[str] = []
            if step.on_failure is not OnFailure.continue_:
                later = list((await s.execute(select(ContainmentStep).where(
                    ContainmentStep.incident_id == step.incident.id, ContainmentStep.playbook == step.playbook,
                    ContainmentStep.step > step.index,
                ).with_for_update())).scalars())
                for other in later:
                    if _releasable(other):
                        other.status, other.sealed_token, other.ended_at, other.updated_at = (
                            StepStatus.cancelled.value, None, now, now)
                        cancelled.append(other.action)
            await self.store.timeline.log_entry(s, step.incident.id, now, "containment_step_failed", detail={
                "playbook": step.playbook, "step": step.index, "action": step.action, "attempts": step.attempts,
                "error": error, "cancelled": cancelled, "on_failure": step.on_failure.value})
            note = (f"Containment failed: playbook {step.playbook} step {step.index + 1} ({step.action}) after "
                    f"{step.attempts} attempt(s): {error}"
                    + (f". Not run: {', '.join(cancelled)}." if cancelled else "."))
            owners = step.incident.owners
            await self.store.outbox.add_notifications(s, step.incident.id, NoticeKind.escalation, owners.responder,
                                                      now=now, note=note)
            if step.on_failure is OnFailure.escalate:
                for ref in owners.escalation:
                    if ref.owner.id != owners.responder.id:
                        await self.store.outbox.add_notifications(s, step.incident.id, NoticeKind.escalation, ref.owner,
                                                                  now=now, note=note)
            return True

    async def notify_once(self, key: str, incident_id: int, target: OwnerRef, note: str, now: datetime) -> bool:
        """A notification from a playbook step, recorded once per step key however often the step runs."""
        try:
            async with self.sessions.begin() as s:
                await self.store.outbox.add_notifications(s, incident_id, NoticeKind.update, target, now=now, note=note,
                                                          effect_key=key)
        except IntegrityError:  # uq_notifications_effect_key: an earlier run of this step recorded it
            return False
        return True

    async def release_leases(self) -> int:
        """Forget every step lease: only safe when no other worker shares the database (the SQLite default)."""
        async with self.sessions.begin() as s:
            return rowcount(await s.execute(update(ContainmentStep).where(
                ContainmentStep.status == StepStatus.executing.value, ContainmentStep.claimed_until.is_not(None),
            ).values(claimed_until=None)))
