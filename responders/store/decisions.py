"""Decisions and containment proposals: the playbooks a finding triggers, the approver's decision, releases."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders.db import session_factory
from responders.db.models import ContainmentDecision, ContainmentStep, Incident
from responders.incidents import ACTIVE, Status, StepStatus
from responders.store.common import RELEASE, WARDEN
from responders.store.notices import NoticeKind
from responders.store.outbox import Outbox
from responders.store.timeline import Timeline
from responders.store.views import steps_of
from warden.contract.actors import Actor
from warden.contract.containment import Gate
from warden.contract.findings import Finding, FindingOwners, OwnerRef


class Decisions:
    """Writes the containment ledger's proposals and the decisions people take on them, each with its timeline
    entry and the responder's update; reads what containment did."""

    def __init__(self, engine: AsyncEngine, timeline: Timeline, outbox: Outbox) -> None:
        self.sessions = session_factory(engine)
        self.timeline = timeline
        self.outbox = outbox

    async def propose(self, s: AsyncSession, incident: Incident, finding: Finding, now: datetime) -> None:
        """Write the playbooks the finding triggers into the ledger, in the transaction that opens the incident: an
        `auto` step is approved at once, an `approver` one waits for the approval, which is due by the earliest
        approval timeout (then the next owner of the chain who approves is asked)."""
        credential = finding.credential
        waiting: list[float] = []
        for plan in finding.containment:
            approved = plan.gate is Gate.auto
            if not approved:
                waiting.append(plan.approval_timeout.total_seconds())
            for index, step in enumerate(plan.steps):
                s.add(ContainmentStep(
                    incident_id=incident.id, playbook=plan.playbook, step=index, action=step.action,
                    params=dict(step.params), gate=plan.gate.value, on_failure=plan.on_failure.value,
                    dry_run=plan.dry_run, approval_timeout_s=plan.approval_timeout.total_seconds(),
                    status=(StepStatus.approved if approved else StepStatus.proposed).value,
                    credential=None if credential is None else {"id": credential.id, "issuer": credential.issuer},
                    sealed_token=None if credential is None else credential.sealed_token,
                    decided_by=WARDEN if approved else None, attempts=0, next_attempt_at=now, detail={},
                    finding_ts=finding.ts, created_at=now, updated_at=now,
                ))
            await self.timeline.log_entry(s, incident.id, now, "containment_proposed", detail={
                "playbook": plan.playbook, "gate": plan.gate.value, "dry_run": plan.dry_run,
                "steps": [step.action for step in plan.steps],
            })
        if waiting:
            incident.approval_due_at = now + timedelta(seconds=min(waiting))

    async def decide(self, incident_id: int, decision: str, *, owner: OwnerRef, by: Actor, note: str,
                     now: datetime) -> bool:
        """Record the approver's containment decision (once per incident) for the playbooks to act on; `by`: the
        approver's identity on the channel it came through (the engine checks it again against the owners)."""
        try:
            async with self.sessions.begin() as s:
                row = await s.get(Incident, incident_id)
                if row is None or Status(row.status) not in ACTIVE:
                    return False
                if not any(st.status == StepStatus.proposed.value for st in await steps_of(s, incident_id)):
                    return False  # no playbook waits for an approval: there is nothing to decide
                s.add(ContainmentDecision(incident_id=incident_id, decision=decision, owner_id=owner.id,
                                          notifier=by.notifier, address=by.address, user_id=by.user, at=now))
                await s.flush()
                await self.timeline.log_entry(s, incident_id, now, f"containment_{decision}", actor=owner.id,
                                              by=by)
                responder = FindingOwners.model_validate(row.owners).responder
                await self.outbox.add_notifications(s, incident_id, NoticeKind.update, responder, now=now, note=note)
                return True
        except IntegrityError:  # uq_decisions_incident: the approver (or a replay) decided already
            return False

    async def request_release(self, incident_id: int, *, owner: OwnerRef, via: str, identity: str,
                              now: datetime, by: Actor | None = None) -> bool:
        """Record a release of the incident's quarantine in the ledger, for the engine to publish; False when no
        quarantine is in effect or a release is already recorded. Whether `owner` may release is checked by the
        caller (`authorise`) and again by the engine when it runs. `via`/`identity` are kept on the step; `by`, a
        notifier's user who clicked, is also written on the timeline entry."""
        async with self.sessions.begin() as s:
            row = (await s.execute(select(Incident).where(Incident.id == incident_id).with_for_update())
                   ).scalar_one_or_none()
            if row is None:
                return False
            steps = await steps_of(s, incident_id)
            done = [st for st in steps if st.status == StepStatus.done.value]
            if not any(st.action == "quarantine_agent" for st in done) or any(st.action == RELEASE for st in steps):
                return False
            s.add(ContainmentStep(
                incident_id=incident_id, playbook=RELEASE, step=0, action=RELEASE, params={}, gate="approver",
                on_failure="escalate", dry_run=False, approval_timeout_s=0.0, status=StepStatus.approved.value,
                decided_by=owner.id, attempts=0, next_attempt_at=now, detail={"via": via, "identity": identity},
                finding_ts=now, created_at=now, updated_at=now,
            ))
            await self.timeline.log_entry(
                s, incident_id, now, "release_requested", actor=owner.id,
                by=by, detail={"via": via, "identity": identity})
            responder = FindingOwners.model_validate(row.owners).responder
            note = f"Quarantine release requested by {owner.name or owner.id} ({via})."
            await self.outbox.add_notifications(s, incident_id, NoticeKind.update, responder, now=now, note=note)
            return True

    async def record_refusal(self, incident_id: int, action: str, by: Actor, reason: str,
                             now: datetime) -> None:
        async with self.sessions.begin() as s:
            await self.timeline.log_entry(s, incident_id, now, "refused", actor="unauthorised",
                                          by=by, detail={"action": action, "reason": reason})

    async def step_counts(self, since: datetime) -> dict[str, int]:
        """Containment steps created since `since`, by status."""
        async with self.sessions.begin() as s:
            rows = (await s.execute(select(ContainmentStep.status, func.count()).where(
                ContainmentStep.created_at >= since).group_by(ContainmentStep.status))).all()
            return {status: int(n) for status, n in rows}

    async def contained_incidents(self, since: datetime) -> list[int]:
        """Incidents with a containment step done since `since`."""
        async with self.sessions.begin() as s:
            return list((await s.execute(select(ContainmentStep.incident_id).where(
                ContainmentStep.created_at >= since, ContainmentStep.status == StepStatus.done.value,
            ).distinct().order_by(ContainmentStep.incident_id))).scalars())
