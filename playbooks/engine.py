"""The containment engine: consumes decisions, climbs unanswered approvals, and runs approved steps from the ledger.

Everything it knows is in the database, so any worker may run any step and a restarted one resumes where the ledger
says: a `done` step is never run again, an interrupted (`executing`) one only through an idempotent action.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from pydantic import ValidationError

from playbooks.actions.base import Action, ActionFailed, Credential, Services, StepContext
from playbooks.ledger import ClaimedStep, Ledger
from responders.incidents import approvers
from responders.store.common import RELEASE
from responders.store.rooms import Store
from warden.contract.matrix import Matrix
from warden.kit.loop import PollingLoop
from warden.kit.retry import Backoff
from warden.kit.sealing import Sealer, SealError
from warden.telemetry import metrics

log = logging.getLogger("warden.containment")


class ContainmentEngine:
    """One pass (`loop`) every `poll_s`: the gate first (decisions, approval timeouts, closed incidents), then up to
    a handful of due steps, run concurrently, each bounded by `timeout_s` and retried per `backoff`."""

    def __init__(self, store: Store, *, actions: Mapping[str, Action], services: Services,
                 matrix: Callable[[], Matrix], sealer: Sealer, clock: Callable[[], datetime], poll_s: float,
                 backoff: Backoff, timeout_s: float, on_change: Callable[[], None]) -> None:
        self.ledger = Ledger(store)
        self.actions, self.services, self.matrix, self.sealer = actions, services, matrix, sealer
        self.clock, self.backoff, self.timeout_s, self.on_change = clock, backoff, timeout_s, on_change
        # Longer than one run can take, so a live run keeps its lease; a crashed one is resumed after it.
        self.lease = timedelta(seconds=2 * timeout_s + 5)
        self.loop = PollingLoop("warden.containment", poll_s, self.run_due, log)

    async def run_due(self) -> int:
        """One pass. Returns how many things moved (so the loop comes straight back while there is work)."""
        now = self.clock()
        moved = 0
        verdicts, climbed, cancelled = await self.ledger.gate(now)
        for verdict in verdicts:
            moved += 1
            if not verdict.honoured:
                log.warning("incident #%d: a containment %s not from an approver was refused", verdict.incident_id,
                            verdict.decision)
            elif verdict.decision != "approve":
                metrics.CONTAINMENT_ACTIONS.labels(action="*", outcome="denied").inc(verdict.steps)
        moved += len(climbed) + cancelled
        claimed = await self.ledger.claim(now, self.lease)
        if claimed:
            await asyncio.gather(*(self._run(step) for step in claimed))
        if moved or claimed:
            self.on_change()
        return moved + len(claimed)

    async def _run(self, step: ClaimedStep) -> None:
        """One attempt of one claimed step, ending in done, dry_run, a retry or a failure (never an exception)."""
        try:
            await self._attempt(step)
        except Exception as exc:
            log.exception("incident #%d: %s step %d raised", step.incident.id, step.playbook, step.index)
            await self._failed(step, ActionFailed(f"{type(exc).__name__} in the action", retryable=True))

    async def _attempt(self, step: ClaimedStep) -> None:
        action = self.actions.get(step.action)
        if action is None:
            await self._failed(step, ActionFailed(f"unknown action {step.action!r} (not in this build)",
                                                  retryable=False))
            return
        try:
            params = action.Params.model_validate(step.params)
        except ValidationError as exc:
            await self._failed(step, ActionFailed(f"invalid parameters: {exc.errors()[0]['msg']}", retryable=False))
            return
        now = self.clock()
        if step.dry_run:
            await self.ledger.done(step, {"does": action.describe(params), "dry_run": "true"}, now, dry_run=True)
            metrics.CONTAINMENT_ACTIONS.labels(action=step.action, outcome="dry_run").inc()
            return
        if step.resumed and not action.idempotent:
            await self._failed(step, ActionFailed("interrupted while running, and the action is not idempotent: "
                                                  "whether it took effect is unknown", retryable=False))
            return
        if step.action == RELEASE and not self._may_release(step):
            await self._failed(step, ActionFailed("the release was not requested by an owner who may approve",
                                                  retryable=False))
            return
        credential = None
        if step.credential is not None:
            token = None
            if action.uses_token and step.sealed_token:
                try:
                    token = self.sealer.open(step.sealed_token)
                except SealError as exc:
                    await self._failed(step, ActionFailed(str(exc), retryable=False))
                    return
            credential = Credential(id=step.credential.get("id"), issuer=step.credential.get("issuer"), token=token)
        ctx = StepContext(key=step.key, incident=step.incident, playbook=step.playbook, index=step.index,
                          attempt=step.attempts, credential=credential, matrix=self.matrix(), services=self.services,
                          timeout_s=self.timeout_s, now=now, decided_by=step.decided_by)
        try:
            detail = await asyncio.wait_for(action.run(params, ctx), self.timeout_s)
        except ActionFailed as exc:
            await self._failed(step, exc)
            return
        except TimeoutError:
            await self._failed(step, ActionFailed(f"no answer within {self.timeout_s:g}s", retryable=True))
            return
        finished = self.clock()
        if await self.ledger.done(step, detail, finished):
            metrics.CONTAINMENT_ACTIONS.labels(action=step.action, outcome="done").inc()
            metrics.CONTAINMENT_SECONDS.observe(max(0.0, (finished - step.finding_ts).total_seconds()))
            log.warning("incident #%d: %s step %d (%s) done", step.incident.id, step.playbook, step.index,
                        step.action)

    def _may_release(self, step: ClaimedStep) -> bool:
        """Checked again when it runs: only an owner who may approve the incident may lift its quarantine."""
        allowed = approvers(step.incident.owners, step.incident.approval_level)
        return any(o.id == step.decided_by for o in allowed)

    async def _failed(self, step: ClaimedStep, exc: ActionFailed) -> None:
        attempts = self.backoff.attempts
        now = self.clock()
        if exc.retryable and (attempts is None or step.attempts < attempts):
            at = now + timedelta(seconds=self.backoff.delay(step.attempts))
            if await self.ledger.retry(step, exc.reason, at, now):
                metrics.CONTAINMENT_ACTIONS.labels(action=step.action, outcome="retried").inc()
                log.warning("incident #%d: %s step %d (%s) failed, retrying at %s: %s", step.incident.id,
                            step.playbook, step.index, step.action, at.isoformat(), exc.reason)
            return
        if await self.ledger.fail(step, exc.reason, now):
            metrics.CONTAINMENT_ACTIONS.labels(action=step.action, outcome="failed").inc()
            log.error("incident #%d: %s step %d (%s) failed after %d attempt(s): %s", step.incident.id,
                      step.playbook, step.index, step.action, step.attempts, exc.reason)
