"""The approval desk's asks in the outbox: recorded (an ask, or the closing of the asked messages) once per notifier
in the transaction of the change that caused them, and claimed with the rest by `Outbox.claim_due`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from responders.db.models import ApprovalRecord, Notification
from responders.store.notices import AnyClaimed, ApprovalView, ClaimedApproval, NoticeKind, Pending, Posted
from warden.contract.findings import OwnerRef


async def record_asks(s: AsyncSession, approval_id: str, kind: NoticeKind, target: OwnerRef, *,
                      notifiers: Iterable[str], now: datetime, level: int | None = None,
                      note: str | None = None) -> list[str]:
    """One pending row per notifier about an approval request: ask `target` at chain `level` (kind `approval`),
    or close the messages asked so far (kind `approval_closed`, only for a notifier that was asked). Each row
    has its effect key (the request, the level or `closed`, the notifier), so recording one twice adds nothing.
    Returns the notifiers a row was added for."""
    added: list[str] = []
    for name in notifiers:
        key = f"approval:{approval_id}:{'closed' if level is None else level}/{name}"
        if (await s.execute(select(Notification.id).where(Notification.effect_key == key))).first():
            continue
        if kind is NoticeKind.approval_closed and not (await s.execute(select(Notification.id).where(
                Notification.approval_id == approval_id, Notification.notifier == name,
                Notification.kind == NoticeKind.approval.value))).first():
            continue  # never asked through this notifier: nothing to close
        s.add(Notification(incident_id=None, approval_id=approval_id, approval_level=level, notifier=name,
                           kind=kind.value, target=target.model_dump(mode="json"), note=note,
                           status=Pending.pending.value, attempts=0, next_attempt_at=now, created_at=now,
                           effect_key=key))
        added.append(name)
    return added


async def claimable_asks(s: AsyncSession, due: ColumnElement[bool], token: str,
                         fetch: int) -> list[tuple[Notification, AnyClaimed]]:
    """Due approval requests' rows, locked. A close waits while an ask of its request through its notifier is
    still pending (it would otherwise miss that message); it carries every ask that was delivered."""
    asked = aliased(Notification)
    still_asking = exists().where(
        asked.approval_id == Notification.approval_id, asked.notifier == Notification.notifier,
        asked.kind == NoticeKind.approval.value, asked.status == Pending.pending.value)
    rows = (await s.execute(
        select(Notification, ApprovalRecord).join(ApprovalRecord, ApprovalRecord.id == Notification.approval_id)
        .where(due, (Notification.kind != NoticeKind.approval_closed.value) | ~still_asking)
        .order_by(Notification.id).limit(fetch)
        .with_for_update(of=Notification, skip_locked=True)
    )).all()
    out: list[tuple[Notification, AnyClaimed]] = []
    for note, record in rows:
        assert note.notifier is not None  # claimed by name above
        level = note.approval_level or 0
        messages: tuple[tuple[Posted, OwnerRef], ...] = ()
        if note.kind == NoticeKind.approval_closed.value:
            messages = tuple((Posted(m.address or "", m.ref or ""), OwnerRef.model_validate(m.target))
                             for m in (await s.execute(select(Notification).where(
                                 Notification.approval_id == note.approval_id,
                                 Notification.notifier == note.notifier,
                                 Notification.kind == NoticeKind.approval.value,
                                 Notification.status == Pending.delivered.value, Notification.ref.is_not(None),
                             ).order_by(Notification.id))).scalars())
        view = ApprovalView(id=record.id, agent_id=record.agent_id, workflow=record.workflow,
                            action=dict(record.action), reason=record.reason, status=record.status,
                            decided_by=record.decided_by, requested_at=record.requested_at)
        out.append((note, ClaimedApproval(
            id=note.id, claim=token, notifier=note.notifier, kind=NoticeKind(note.kind),
            attempts=note.attempts + 1, target=OwnerRef.model_validate(note.target), note=note.note,
            approval=view, messages=messages,
            # the owner at this level may decide (an identity change's escalation steps only chase the approver)
            buttons=level < len(record.chain) and bool(record.chain[level].get("decides", True)))))
    return out
