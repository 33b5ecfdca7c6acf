"""How incident rows and their containment ledger are read into the domain's `IncidentView`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from responders.db.models import ContainmentDecision, ContainmentStep, Incident
from responders.incidents import Decision, IncidentView, Status, StepView
from warden.contract.findings import FindingOwners


def view_of(row: Incident, decision: ContainmentDecision | None,
          steps: Sequence[ContainmentStep] = ()) -> IncidentView:
    return IncidentView(
        id=row.id, key=row.key, status=Status(row.status), rule=row.rule, severity=row.severity, title=row.title,
        agent_id=row.agent_id, workflow=row.workflow, target=row.target, frameworks=tuple(row.frameworks),
        evidence=dict(row.evidence), owners=FindingOwners.model_validate(row.owners), count=row.count,
        first_seen=row.first_seen, last_seen=row.last_seen, opened_at=row.opened_at,
        escalation_step=row.escalation_step, policy_sha256=row.policy_sha256, status_by=row.status_by,
        tags=tuple(row.tags), approval_level=row.approval_level, group_id=row.group_id, group_role=row.group_role,
        containment=tuple(StepView(s.playbook, s.step, s.action, s.status, s.gate, s.dry_run, s.detail.get("does"))
                          for s in steps),
        decision=None if decision is None else Decision(decision.decision, decision.owner_id, decision.via,
                                                        decision.at),
    )


async def decision_of(s: AsyncSession, incident_id: int) -> ContainmentDecision | None:
    return (await s.execute(
        select(ContainmentDecision).where(ContainmentDecision.incident_id == incident_id)
    )).scalar_one_or_none()


async def containment_of(s: AsyncSession, incident_ids: set[int]) -> tuple[
        dict[int, ContainmentDecision], dict[int, list[ContainmentStep]]]:
    """The decisions and ledgers of several incidents in two queries (a claim takes up to 20 rows: two queries
    per row were most of its statements)."""
    if not incident_ids:
        return {}, {}
    decisions = {d.incident_id: d for d in (await s.execute(
        select(ContainmentDecision).where(ContainmentDecision.incident_id.in_(incident_ids))
    )).scalars()}
    steps: dict[int, list[ContainmentStep]] = {}
    for step in (await s.execute(
        select(ContainmentStep).where(ContainmentStep.incident_id.in_(incident_ids)).order_by(ContainmentStep.id)
    )).scalars():
        steps.setdefault(step.incident_id, []).append(step)
    return decisions, steps


async def steps_of(s: AsyncSession, incident_id: int) -> list[ContainmentStep]:
    """The incident's containment ledger, in playbook and step order."""
    return list((await s.execute(
        select(ContainmentStep).where(ContainmentStep.incident_id == incident_id).order_by(ContainmentStep.id)
    )).scalars())
