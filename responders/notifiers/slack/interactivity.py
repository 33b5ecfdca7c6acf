"""Slack's button clicks: verified, answered within 3 s, then authorised against the incident's frozen owners."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from responders.incidents import (
    ACTIVE,
    CONTAINMENT_ACTIONS,
    LIFECYCLE_ACTIONS,
    Action,
    IncidentView,
    TransitionError,
    approvers,
    authorise,
    check_transition,
)
from responders.notifiers.base import DecidesApprovals
from responders.notifiers.slack import metrics as slack_metrics
from responders.notifiers.slack.approval_clicks import ApprovalClicks, Tells
from responders.notifiers.slack.render import NOTIFIER, button_presses, is_user_id
from responders.silences import ONE_HOUR, Silences
from responders.store.rooms import Store
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef
from warden.telemetry import metrics

log = logging.getLogger("warden.interactivity")

PATH = "/slack/interactions"
MAX_SKEW_S = 300  # Slack's own rule: a request more than 5 minutes old is refused
REPLAY_MEMORY = timedelta(seconds=2 * MAX_SKEW_S)  # longer than a signature can stay fresh


@dataclass(frozen=True)
class Click:
    """One button press, as far as Warden cares."""

    action: Action
    incident_id: int
    user: str  # the Slack user id of who clicked
    channel: str

    @property
    def actor(self) -> Actor:
        """Who clicked, as the core records people: the Slack user, from the channel the message is in."""
        return Actor(NOTIFIER, self.user, self.channel)


def clicks(payload: dict[str, Any]) -> list[Click]:
    """The Warden buttons pressed in a `block_actions` payload; anything else is ignored."""
    pressed = button_presses(payload)
    if pressed is None:
        return []
    user, channel, actions = pressed
    out = []
    for action in actions:
        try:
            out.append(Click(Action(action.get("action_id")), int(action.get("value")), user, channel))
        except (ValueError, TypeError, AttributeError):
            continue
    return out


def refusal(action: Action, incident: IncidentView) -> str:
    owners = incident.owners
    if action is Action.silence:
        named = " or ".join(o.name or o.id for o in (owners.responder, owners.approver) if o is not None)
        return (f"Refused: only {named} may silence incident #{incident.id}'s pages. Your click was recorded.")
    if action in CONTAINMENT_ACTIONS or action is Action.release:
        named = " or ".join(o.name or o.id for o in approvers(owners, incident.approval_level))
        what = "release the quarantine" if action is Action.release else "approve or deny containment"
        return (f"Refused: only the named approver, {named or 'nobody (no approver named)'}, may {what} for "
                f"incident #{incident.id}. Your click was recorded.")
    named = owners.responder.name or owners.responder.id
    return (f"Refused: only the named responder, {named}, or its escalation chain may do that for incident "
            f"#{incident.id}. Your click was recorded.")


def _note(action: Action, owner: OwnerRef, user: str) -> str:
    done = {Action.acknowledge: "Acknowledged", Action.resolve: "Resolved", Action.false_positive:
            "Marked a false positive", Action.approve: "Containment approved", Action.deny: "Containment denied",
            Action.release: "Quarantine release requested", Action.silence: "Silenced for 1 h"}
    return f"{done[action]} by {owner.name or owner.id} (Slack user {user})."


class Interactivity:
    """The aiohttp route for Slack's interactivity requests, installed into warden.web.WebServer. Replies only the
    clicker sees go through the Slack notifier's `tell`; changes go through the store and so the outbox."""

    def __init__(self, store: Store, slack: Tells, signing_secret: str, *,
                 clock: Callable[[], datetime], on_change: Callable[[], None],
                 silences: Silences | None = None) -> None:
        self.store, self.slack, self.clock, self.on_change = store, slack, clock, on_change
        self.silences = silences or Silences(store.engine)
        self.verifier = SignatureVerifier(signing_secret)
        self._work: set[asyncio.Task[None]] = set()
        self._approvals: ApprovalClicks | None = None  # the approval requests' buttons, once a desk is given

    def install(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.receive)

    def take_approvals(self, desk: DecidesApprovals) -> None:
        self._approvals = ApprovalClicks(desk, self.slack)

    async def receive(self, request: web.Request) -> web.Response:
        """Check the request and answer at once; the clicks are handled after the answer."""
        body = await request.read()  # the raw bytes: the signature covers exactly these
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_S:
            return await self._reject(request, "stale", 401)
        if not self.verifier.is_valid(body, timestamp, signature):
            return await self._reject(request, "forged", 401)
        if not await self.store.security.first_sighting(signature, self.clock(), REPLAY_MEMORY):
            return await self._reject(request, "replayed", 409)
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
        except (KeyError, IndexError, UnicodeDecodeError, ValueError):
            return await self._reject(request, "malformed", 400)
        slack_metrics.SLACK_INTERACTIONS.labels(outcome="accepted").inc()
        task = asyncio.create_task(self._handle(clicks(payload), payload))
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return web.Response(status=200)

    @property
    def busy(self) -> int:
        """Clicks answered but still being handled."""
        return len(self._work)

    async def drain(self) -> None:
        """Wait for clicks still being handled (tests, shutdown)."""
        while self._work:
            await asyncio.gather(*list(self._work), return_exceptions=True)

    async def _reject(self, request: web.Request, outcome: str, status: int) -> web.Response:
        """Refused, counted, logged, and recorded for auditors, without the body (it is untrusted and may be
        large): when, why, from where, and the request timestamp it claimed."""
        slack_metrics.SLACK_INTERACTIONS.labels(outcome=outcome).inc()
        log.warning("refused a Slack interaction request: %s", outcome)
        claimed = request.headers.get("X-Slack-Request-Timestamp", "")[:32]
        await self.store.security.record_security_event("slack_interaction", outcome, self.clock(), {
            "status": status, "remote": request.remote or "", "request_timestamp": claimed,
            "signature_present": "X-Slack-Signature" in request.headers})
        return web.Response(status=status, text=outcome)

    async def _handle(self, batch: list[Click], payload: dict[str, Any]) -> None:
        for click in batch:
            try:
                await self._act(click)
            except Exception:  # one bad click must not stop the others (it is logged with its traceback)
                log.exception("handling %s on incident #%d failed", click.action.value, click.incident_id)
        if self._approvals is not None:
            try:
                await self._approvals.handle(payload)
            except Exception:  # logged with its traceback
                log.exception("handling the approval buttons of a click failed")

    async def _act(self, click: Click) -> None:
        incident = await self.store.incidents.incident(click.incident_id)
        if incident is None:
            await self.slack.tell(click.channel, click.user, f"Incident #{click.incident_id} is unknown.")
            return
        owner = authorise(click.action, incident.owners, NOTIFIER, click.user, incident.approval_level) \
            if is_user_id(click.user) else None  # a channel id never clicks
        if owner is None:
            text = refusal(click.action, incident)
            await self.store.decisions.record_refusal(incident.id, click.action.value, click.actor, text,
                                                      self.clock())
            metrics.INTERACTION_REFUSALS.labels(action=click.action.value).inc()
            await self.slack.tell(click.channel, click.user, text)
            return
        note = _note(click.action, owner, click.user)
        if click.action is Action.silence:
            await self._silence(click, incident, owner)
            return
        if click.action in LIFECYCLE_ACTIONS:
            target = LIFECYCLE_ACTIONS[click.action]
            try:
                check_transition(incident.status, target)
            except TransitionError as exc:
                await self.slack.tell(click.channel, click.user, f"Incident #{incident.id}: {exc}.")
                return
            done = await self.store.incidents.transition(incident.id, incident.status, target, owner=owner,
                                               by=click.actor, note=note, now=self.clock())
        elif click.action is Action.release:
            if not incident.quarantined:
                await self.slack.tell(click.channel, click.user,
                                      f"Incident #{incident.id}: no quarantine in effect to release.")
                return
            done = await self.store.decisions.request_release(incident.id, owner=owner, via=NOTIFIER,
                                                    identity=click.user, by=click.actor,
                                                              now=self.clock())
        else:
            if incident.decision is not None or incident.status not in ACTIVE or not incident.awaiting_approval:
                await self.slack.tell(click.channel, click.user,
                                      f"Incident #{incident.id}: {incident.containment_status}.")
                return
            done = await self.store.decisions.decide(incident.id, CONTAINMENT_ACTIONS[click.action], owner=owner,
                                           by=click.actor, note=note, now=self.clock())
        if done:
            self.on_change()
        else:
            await self.slack.tell(click.channel, click.user,
                                     f"Incident #{incident.id} changed before your click; nothing was done.")

    async def _silence(self, click: Click, incident: IncidentView, owner: OwnerRef) -> None:
        """Silence 1 h: a silence on the incident's group (its group_by labels), or on its rule and agent when it
        has no group, authored by the owner who clicked; on the silence's trail and the incident's timeline."""
        now = self.clock()
        matchers = await self.store.incidents.silence_matchers(incident.id)
        silence = await self.silences.add(
            matchers, starts_at=now, ends_at=now + ONE_HOUR, author=owner.id, identity=f"slack:{click.user}",
            comment=f"Silence 1 h from Slack on incident #{incident.id}, by {owner.name or owner.id}", now=now)
        await self.store.timeline.note_silence(incident.id, silence.id, silence.matchers, owner=owner,
                                      by=click.actor, now=now)
        await self.slack.tell(click.channel, click.user,
                              f"Silenced until {silence.ends_at:%H:%M}Z as silence #{silence.id} "
                              f"({', '.join(silence.matchers)}). Pages it matches are recorded, not paged; "
                              f"containment still runs. Expire it with `warden silence expire {silence.id}`.")
