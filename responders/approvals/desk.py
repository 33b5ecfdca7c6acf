"""The approval desk: records a gateway's request with its verdict, asks the named approver (through the outbox, on
each notifier that asks for approvals), takes their click (checked against the frozen chain on the server),
escalates, expires, and publishes every answer.

Records first, effects after: a request is committed before any answer is published, and a background pass
(`step`) routes, escalates, expires and publishes whatever the database says is due, so a crash between the two only
delays the effect. An ask, and the closing of the asked messages once the request is decided, are outbox rows
committed with the change that caused them: the outbox delivers them with its dedup key, claim, lease, fencing,
retries, dead letters and record, like every incident notification.

A granted approval is published as an `approval` activity event (event id `warden.approval:<request id>:<status>`,
approver = the deciding owner, ref = the change's target), so `unreviewed_identity_change` accepts the change it
covers, once, and a state rebuild from the log sees it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders.approvals.store import ApprovalStore, Entry, chain_of, deciders_of, decides
from responders.db.models import ApprovalRecord
from responders.notifiers.base import CONFLICT, DONE, FORBIDDEN
from responders.store.approval_asks import record_asks
from responders.store.notices import NoticeKind
from warden.contract.actors import Actor
from warden.contract.approval_requests import (
    APPROVE,
    DENY,
    FINAL,
    MAX_WAIT_S,
    ApprovalAnswer,
    ApprovalRequest,
    ApprovalStatus,
    Judgement,
    Verdict,
)
from warden.contract.events import ActivityEvent, Agent, Approval, Decision, Kind
from warden.contract.findings import OwnerRef
from warden.contract.redact import redact_text, redact_tree
from warden.kit.loop import PollingLoop
from warden.telemetry import metrics

log = logging.getLogger("warden.approvals")

Judge = Callable[[ApprovalRequest, str, datetime], Judgement]
# Publishes an answer (keyed by request id) and, for a decision, the approval activity event (keyed by agent).
Publish = Callable[[ApprovalAnswer, ActivityEvent | None], Awaitable[None]]
_STATUS_OF = {Verdict.allow: ApprovalStatus.allowed, Verdict.deny: ApprovalStatus.denied,
              Verdict.approval_required: ApprovalStatus.pending}


def answer_of(r: ApprovalRecord) -> ApprovalAnswer:
    expires = None
    if r.status == ApprovalStatus.pending.value and r.escalate_at is not None:
        expires = r.escalate_at + timedelta(seconds=r.timeout_s * max(0, len(r.chain) - 1 - r.level))
    return ApprovalAnswer(request_id=r.id, correlation_id=r.correlation_id, agent_id=r.agent_id, workflow=r.workflow,
                          verdict=Verdict(r.verdict), status=ApprovalStatus(r.status), rule=r.rule, reason=r.reason,
                          evidence=dict(r.evidence), approver=r.approver, decided_by=r.decided_by,
                          requested_at=r.requested_at, decided_at=r.decided_at, expires_at=expires)


def approval_event(r: ApprovalRecord) -> ActivityEvent | None:
    """The activity event a decision becomes: approved or rejected by the owner who decided (none for an
    allow, a deny verdict or an expiry: no human decided, and the detector then finds no approval)."""
    if r.status not in (ApprovalStatus.approved.value, ApprovalStatus.denied.value) or r.decided_by is None:
        return None
    if r.decided_at is None or r.verdict != Verdict.approval_required.value:
        return None
    decision = Decision.approved if r.status == ApprovalStatus.approved.value else Decision.rejected
    return ActivityEvent(event_id=f"warden.approval:{r.id}:{r.status}", ts=r.decided_at, kind=Kind.approval,
                         agent=Agent(id=r.agent_id), workflow=r.workflow,
                         approval=Approval(approver=r.decided_by, decision=decision, ref=r.target),
                         attributes={"approval_request": r.id})


class ApprovalDesk:
    """One per worker. `submit` answers at once; `step` (its `loop`) does the rest from the database.

    The asks are outbox rows for `notifiers`, the notifiers that ask for approvals (`AsksApproval`), recorded
    with the change that caused them (`responders/store/approval_asks.py`); `wake` asks the outbox for a pass
    once some are recorded. With no such notifier an ask is recorded as routed nowhere: the owner decides
    through the API. A notifier's buttons decide through `decide_by` (its inbound route takes the desk:
    `Inbound.take_approvals`)."""

    def __init__(self, engine: AsyncEngine, *, judge: Judge, clock: Callable[[], datetime],
                 notifiers: Sequence[str] = (), wake: Callable[[], None] = lambda: None,
                 publish: Publish | None = None, poll_s: float = 1.0,
                 live_policy: Callable[[], str] | None = None) -> None:
        self.store = ApprovalStore(engine, live_policy)
        self.judge, self.clock, self.publish = judge, clock, publish
        self.notifiers, self.wake_outbox = tuple(notifiers), wake
        self.live_policy = live_policy
        self.loop = PollingLoop("warden.approvals", poll_s, self.step, log)
        self._changed = asyncio.Event()

    # -- requests ---------------------------------------------------------------------------------------------

    async def submit(self, request: ApprovalRequest, *, gateway: str, transport: str, identity: str | None = None,
                     request_id: str | None = None) -> ApprovalAnswer:
        """Judge and record a request (idempotent on its id) and return the answer as it stands."""
        rid = request.request_id or request_id or uuid.uuid4().hex
        existing = await self.answer(rid)
        if existing is not None:
            return existing
        now = self.clock()
        j = self.judge(request, rid, now)
        status = _STATUS_OF[j.verdict]
        action = redact_tree(request.model_dump(mode="json", include={"tool", "identity_change"},
                                                exclude_none=True))
        correlation = redact_text(request.correlation_id, 256) if request.correlation_id else None
        record = ApprovalRecord(
            id=rid, correlation_id=correlation, gateway=redact_text(gateway, 200),
            agent_id=request.agent.id, workflow=j.workflow, verdict=j.verdict.value, status=status.value,
            rule=j.rule, reason=redact_text(j.reason, 1000), evidence=dict(j.evidence), action=action,
            target=redact_text(j.target, 250), approval_from=j.approval_from, approver=j.approver,
            chain=[{**o.model_dump(mode="json"), "decides": d} for o, d in zip(j.chain, j.decides, strict=True)],
            level=0, notified_level=-1,
            timeout_s=j.timeout.total_seconds(), requested_at=now,
            escalate_at=now + j.timeout if status is ApprovalStatus.pending else None,
            decided_at=None if status is ApprovalStatus.pending else now, decided_by=None, published=None,
            policy_sha256=self.live_policy() if self.live_policy else "")
        entries = [Entry("requested", {"gateway": gateway, "transport": transport, "action": action,
                                       "correlation_id": correlation or "",
                                       "session_id": request.session_id or ""}, actor=gateway, identity=identity),
                   Entry("verdict", {"verdict": j.verdict.value, "rule": j.rule or "", "reason": j.reason,
                                     "evidence": dict(j.evidence), "approver": j.approver or "",
                                     "approval_from": j.approval_from or ""})]
        stored, created = await self.store.create(record, entries, now)
        if created:
            metrics.APPROVAL_REQUESTS.labels(verdict=j.verdict.value, transport=transport).inc()
            self.loop.wake()
        return answer_of(stored) if created else (await self.answer(rid) or answer_of(stored))

    async def answer(self, request_id: str) -> ApprovalAnswer | None:
        """The answer as a gateway may act on it: `approved` only once the approval event is on the activity
        topic (until then `pending`), so the change it covers can never reach the detector before it."""
        record = await self.store.get(request_id)
        if record is None:
            return None
        answer = answer_of(record)
        if answer.status is ApprovalStatus.approved and record.published != ApprovalStatus.approved.value:
            return answer.model_copy(update={"status": ApprovalStatus.pending, "decided_by": None,
                                             "decided_at": None})
        return answer

    async def wait(self, request_id: str, seconds: float) -> ApprovalAnswer | None:
        """The answer once final, or as it stands after at most `seconds` (bounded by MAX_WAIT_S). Re-reads the
        database at least every second, so a decision taken by another worker is seen too."""
        deadline = asyncio.get_running_loop().time() + max(0.0, min(seconds, MAX_WAIT_S))
        while True:
            current = await self.answer(request_id)
            left = deadline - asyncio.get_running_loop().time()
            if current is None or current.status in FINAL or left <= 0:
                return current
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(1.0, left))

    # -- decisions --------------------------------------------------------------------------------------------

    async def decide_by(self, request_id: str, actor: Actor, *, approve: bool, person: bool
                        ) -> tuple[str, str] | None:
        """A button pressed on a notifier's message: only an owner of the chain up to the current level who
        decides, acting as themself on that notifier (`person`: the notifier says the clicker can be a person at
        all), and only while pending. (DONE, FORBIDDEN or CONFLICT, what happened), or None for an unknown request;
        a refusal is recorded."""
        record = await self.store.get(request_id)
        if record is None:
            return None
        owner = next((o for o in deciders_of(record) if o.may_act_as(actor.notifier, actor.user)), None) \
            if person else None
        return await self._decide(record, owner, approve=approve, identity=actor.identity, via=actor.notifier)

    async def decide_as(self, request_id: str, owner_id: str, identity: str, *, approve: bool
                        ) -> tuple[str, str] | None:
        """A decision through the API by an owner a bearer token stands for, checked like a click: (DONE,
        FORBIDDEN or CONFLICT, what happened), or None for an unknown request."""
        record = await self.store.get(request_id)
        if record is None:
            return None
        owner = next((o for o in deciders_of(record) if o.id == owner_id), None)
        return await self._decide(record, owner, approve=approve, identity=identity, via="api")

    async def _decide(self, record: ApprovalRecord, owner: OwnerRef | None, *, approve: bool, identity: str,
                      via: str) -> tuple[str, str]:
        """Record the decision of `owner` (None: the caller may not decide), or refuse and record why."""
        now = self.clock()
        action = APPROVE if approve else DENY
        if owner is None:
            named = " or ".join(o.name or o.id for o in deciders_of(record)) or "nobody"
            reason = f"only {named} may decide approval request {record.id}"
            await self._refuse(record, identity, action, reason, code="not_approver", now=now)
            return FORBIDDEN, f"Refused: {reason}. Your attempt was recorded."
        status = ApprovalStatus.approved if approve else ApprovalStatus.denied
        entry = Entry(status.value, {"by": owner.id, "name": owner.name or owner.id, "via": via,
                                     "level": record.level}, actor=owner.id, identity=identity)
        done = await self.store.transition(record.id, level=record.level, now=now, entry=entry, values={
            "status": status.value, "decided_at": now, "decided_by": owner.id, "escalate_at": None})
        if not done:
            fresh = await self.store.get(record.id) or record
            reason = f"approval request {record.id} is already {fresh.status}"
            await self._refuse(record, identity, action, reason, code="already_decided", now=now)
            return CONFLICT, f"Refused: {reason}. Your attempt was recorded."
        metrics.APPROVAL_DECISION_SECONDS.labels(status=status.value).observe(
            max(0.0, (now - record.requested_at).total_seconds()))
        log.warning("approval request %s %s by %s (%s)", record.id, status.value, owner.id, via)
        self._decided()
        return DONE, f"{status.value} by {owner.id}"

    async def _refuse(self, record: ApprovalRecord, identity: str, action: str, reason: str, *, code: str,
                      now: datetime) -> None:
        await self.store.log(record.id, now, Entry("refused", {"action": action, "reason": reason},
                                                  actor="unauthorised", identity=identity))
        metrics.APPROVAL_REFUSALS.labels(reason=code).inc()

    def _decided(self) -> None:
        self._changed.set()
        self.loop.wake()

    # -- the background pass ----------------------------------------------------------------------------------

    async def step(self) -> bool:
        """Escalate or expire what is due, route what is unrouted, publish what is unpublished. True when it
        did something (the loop then runs again at once)."""
        busy = await self._escalate_due()
        busy = await self._route() or busy
        return await self._publish() or busy

    async def _escalate_due(self) -> bool:
        now = self.clock()
        moved = False
        for r in await self.store.due(now):
            chain = chain_of(r)
            if r.level + 1 < len(chain):
                nxt = chain[r.level + 1]
                done = await self.store.transition(
                    r.id, level=r.level, now=now, values={"level": r.level + 1,
                                                          "escalate_at": now + timedelta(seconds=r.timeout_s)},
                    entry=Entry("escalated", {"to": nxt.id, "step": r.level + 2, "of": len(chain),
                                              "reason": f"no answer from {chain[r.level].id} within "
                                                        f"{int(r.timeout_s)}s"}))
                if done:
                    metrics.ESCALATIONS.inc()
                    log.warning("approval request %s escalated to %s", r.id, nxt.id)
            else:
                expiry = Entry("expired", {"reason": f"nobody on the chain ({', '.join(o.id for o in chain)}) "
                                                     "answered in time; the action stays blocked"})
                done = await self.store.transition(r.id, level=r.level, now=now, entry=expiry, values={
                    "status": ApprovalStatus.expired.value, "decided_at": now, "escalate_at": None})
                if done:
                    metrics.APPROVAL_EXPIRIES.inc()
                    metrics.APPROVAL_DECISION_SECONDS.labels(status="expired").observe(
                        max(0.0, (now - r.requested_at).total_seconds()))
                    log.warning("approval request %s expired", r.id)
                    self._changed.set()
            moved = moved or done
        return moved

    async def _route(self) -> bool:
        """Ask the owner at the request's current level (the named approver first), and only them: one outbox row
        per notifier that asks for approvals, committed with the `routed` entry."""
        routed = False
        for r in await self.store.unrouted():
            target = chain_of(r)[r.level]
            where: dict[str, Any] = {"to": target.id, "step": r.level + 1}
            also = None
            if not self.notifiers:
                where["via"] = "none: no Slack notifier (the owner decides with POST /v1/approvals/{id}/approve)"
                log.warning("approval request %s: no Slack notifier to ask %s", r.id, target.id)
            else:
                where["via"] = ", ".join(self.notifiers)
                also = self._ask(r, target, self.clock())
            routed = await self.store.routed(r.id, r.level, self.clock(), Entry("routed", where), also) or routed
        if routed and self.notifiers:
            self.wake_outbox()
        return routed

    def _ask(self, r: ApprovalRecord, target: OwnerRef, now: datetime) -> Callable[[AsyncSession], Awaitable[object]]:
        waiting = ", ".join(o.id for o in deciders_of(r))
        preface = None if r.level == 0 else (
            f"Escalated to you: not answered by {waiting} in time." if decides(r, r.level) else
            f"Escalated to you: {waiting} has not answered, and only they may approve this identity change. "
            "Please reach them; without an answer the request expires and the action stays blocked.")

        async def add(s: AsyncSession) -> object:
            return await record_asks(s, r.id, NoticeKind.approval, target, notifiers=self.notifiers, now=now,
                                     level=r.level, note=preface)
        return add

    async def _publish(self) -> bool:
        """Publish every answer not yet published (at least once; gateways keep the latest per request id), and
        have the messages of a decided request closed so their buttons go (outbox rows, with the publication)."""
        if self.publish is None:
            return False
        done = closing = False
        for r in await self.store.unpublished():
            await self.publish(answer_of(r), approval_event(r))
            also = None
            if r.status in (ApprovalStatus.approved.value, ApprovalStatus.denied.value,
                            ApprovalStatus.expired.value) and r.verdict == Verdict.approval_required.value \
                    and self.notifiers:
                also, closing = self._close(r), True
            await self.store.published(r.id, r.status, also)
            done = True
        if closing:
            self.wake_outbox()
        if done:
            self._changed.set()  # a long-poll waiting for an approval's event to be published
        return done

    def _close(self, r: ApprovalRecord) -> Callable[[AsyncSession], Awaitable[object]]:
        now, target = self.clock(), chain_of(r)[min(r.level, len(r.chain) - 1)]

        async def add(s: AsyncSession) -> object:
            return await record_asks(s, r.id, NoticeKind.approval_closed, target, notifiers=self.notifiers,
                                     now=now)
        return add
