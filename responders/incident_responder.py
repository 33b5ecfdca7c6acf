"""The default responder: a finding becomes (or joins) an incident, and the named responder hears about it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

from responders.api import IncidentApi, parse_tokens
from responders.base import RouteInstaller
from responders.budget import Budget
from responders.config import ResponderConfig
from responders.db import is_sqlite, make_engine, migrate
from responders.escalation import Escalator
from responders.notifiers.base import Budgeted, Inbound, Interactive, Notifier
from responders.notifiers.registry import notifiers_for
from responders.outbox import Outbox
from responders.outbox.wake import ListenWake
from responders.review_digest import ReviewDigests
from responders.silences import Silences
from responders.store.common import utcnow
from responders.store.incidents import Recorded
from responders.store.notices import NoticeKind
from responders.store.rooms import Store
from responders.trail import Trail
from warden.contract.findings import Finding
from warden.contract.matrix import Matrix, Tier
from warden.kit.loop import PollingLoop
from warden.telemetry import metrics

log = logging.getLogger("warden.incidents")
# What notification control decided for a page, as the metric names it.
CONTROL_OUTCOME = {"leader": "paged", "member": "grouped", "silenced": "silenced", "inhibited": "inhibited"}
QUIET = frozenset({"member", "silenced", "inhibited"})


class IncidentResponder:
    """Records first, notifies after: `handle` writes the incident and its outbox rows (one per notifier) in one
    transaction; the outbox and escalation loops started by `start` do the talking, from what the DB says."""

    def __init__(self, settings: ResponderConfig, notifiers: Sequence[Notifier] | None = None,
                 clock: Callable[[], datetime] = utcnow, *, live_policy: Callable[[], str] | None = None,
                 live_matrix: Callable[[], tuple[str, Matrix]] | None = None) -> None:
        self.notifiers = list(notifiers) if notifiers is not None else notifiers_for(settings)
        names = [n.name for n in self.notifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"each notifier may deliver once per worker, got {names}")
        self.engine = make_engine(settings.effective_database_url)
        budgeted = [n for n in self.notifiers if isinstance(n, Budgeted)]
        # One budget row per notifier and channel; its rate and burst are the budgeted notifier's (none: unused).
        budget = Budget(rate=budgeted[0].channel_rate, burst=budgeted[0].channel_burst) if budgeted else Budget()
        self.store = Store.build(self.engine, names, budget=budget, api_url=settings.api_public_url,
                                 live_policy=live_policy, live_matrix=live_matrix)
        self.silences = Silences(self.engine)
        self.clock = clock
        self.outbox = Outbox(
            self.store, self.notifiers, clock=clock, max_attempts=settings.notify_max_attempts,
            backoff_s=settings.notify_retry_backoff_s, lease_s=settings.outbox_lease_s, poll_s=settings.outbox_poll_s,
        )
        self.listen = ListenWake(self.engine, self.outbox.wake)  # other writers' notifications (PostgreSQL)
        self.escalator = Escalator(self.store.escalations, clock=clock, poll_s=settings.escalation_poll_s,
                                   on_escalated=self.outbox.wake)
        self.digests = ReviewDigests(self.store, clock=clock, interval=settings.review_digest_interval,
                                     poll_s=settings.escalation_poll_s, on_made=self.outbox.wake)
        for notifier in budgeted:
            if notifier.on_rate_limit is None:  # a 429 holds the channel for every worker
                notifier.on_rate_limit = partial(self._rate_limited, notifier.name)
        # Buttons exist only on the messages of an interactive notifier, and the answers go through it.
        interactive = next((n for n in self.notifiers if isinstance(n, Interactive)), None)
        inbound = "no notifier with buttons" if interactive is None else interactive.inbound(
            self.store, self.silences, clock=clock, on_change=self._owner_acted)
        self.interactivity: Inbound | None = None if isinstance(inbound, str) else inbound
        self.trail = Trail(self.engine)
        self.gauges = PollingLoop("incident-gauges", settings.escalation_poll_s, self.update_gauges, log)
        tokens = parse_tokens(settings.api_tokens.get_secret_value()) if settings.api_tokens else []
        self.api = IncidentApi(self.store, self.trail, tokens, clock, self.outbox.wake,
                               silences=self.silences) if tokens else None
        # Told when an incident opens or an owner's click changed one (the containment engine, so an auto gate, an
        # approval or a release acts without waiting for its poll).
        self.containment_due: list[Callable[[], None]] = []
        self._interactivity_off = inbound if isinstance(inbound, str) else ""

    async def start(self) -> None:
        await migrate(self.engine)
        if is_sqlite(self.engine):  # the embedded default has one worker: leases left by a crash are ours
            released = await self.store.outbox.release_claims()
            if released:
                log.warning("re-sending %d notifications interrupted by the last stop", released)
        self.outbox.loop.start()
        self.listen.start()
        self.escalator.loop.start()
        self.digests.loop.start()
        self.gauges.start()
        for tier in (Tier.page, Tier.review, Tier.log):
            metrics.FINDINGS_BY_TIER.labels(tier=tier.value)
        for outcome in CONTROL_OUTCOME.values():
            metrics.PAGES_CONTROLLED.labels(outcome=outcome)
        for name in self.store.notifiers:  # zero series exist from the start, so increase() sees the first one
            for kind in NoticeKind:
                metrics.NOTIFICATIONS_DELIVERED.labels(notifier=name, kind=kind.value)
                metrics.NOTIFICATIONS_DEAD.labels(notifier=name, kind=kind.value)
            metrics.NOTIFICATIONS_DEFERRED.labels(notifier=name)
            metrics.CHANNEL_RATE_LIMITED.labels(notifier=name)
            metrics.DIGEST_MEMBERS_NAMED.labels(notifier=name)
        log.warning("incident responder up: notifiers=%s db=%s interactivity=%s", ",".join(self.store.notifiers),
                    self.engine.url.render_as_string(hide_password=True),
                    "on" if self.interactivity else f"off ({self._interactivity_off})")
        if self.api is None:
            log.warning("incident API off: WARDEN_API_TOKENS is unset (GET /incidents, evidence pages and "
                        "POST ack/resolve are not served)")
        else:
            log.warning("incident API on: /incidents, /openapi.json (%d bearer tokens)", len(self.api.tokens))

    def _owner_acted(self) -> None:
        """A click changed an incident: the outbox tells everyone, containment acts on an approval or release."""
        self.outbox.wake()
        for listener in self.containment_due:
            listener()

    async def _rate_limited(self, notifier: str, channel: str, seconds: float) -> None:
        if not channel:  # a request to no channel (a look-up by user id): nothing for the budget to hold
            return
        await self.store.outbox.rate_limited(notifier, channel, seconds, self.clock())
        metrics.CHANNEL_RATE_LIMITED.labels(notifier=notifier).inc()

    async def handle(self, finding: Finding) -> None:
        control: list[str] = []
        outcome = await self.store.incidents.record_finding(finding, self.clock(), control)
        for verdict in control:
            metrics.PAGES_CONTROLLED.labels(outcome=CONTROL_OUTCOME.get(verdict, verdict)).inc()
        tier = finding.tier.on_event_path()
        if outcome is Recorded.opened:
            metrics.INCIDENTS_OPENED.labels(rule=finding.rule, severity=finding.severity.value, tier=tier.value).inc()
        elif outcome in (Recorded.grouped, Recorded.promoted):
            metrics.FINDINGS_GROUPED.labels(rule=finding.rule).inc()
        if outcome is Recorded.promoted:
            metrics.TIER_RAISED.labels(to=tier.value).inc()
        if outcome in (Recorded.opened, Recorded.grouped, Recorded.promoted):
            metrics.FINDINGS_BY_TIER.labels(tier=tier.value).inc()
            if tier is Tier.page and outcome is not Recorded.grouped:  # a page opened: containment may be due
                for listener in self.containment_due:
                    listener()
            if control and all(v in QUIET for v in control):
                self.outbox.nudge()  # a digest member (or a muted page): no page waits on this
            else:
                self.outbox.wake()

    async def stop(self) -> None:
        await self.listen.stop()
        await self.outbox.loop.stop()
        await self.escalator.loop.stop()
        await self.digests.loop.stop()
        await self.gauges.stop()
        if self.interactivity:
            await self.interactivity.drain()
        await self.engine.dispose()

    async def update_gauges(self) -> bool:
        """`warden_incidents_open{severity,tier}` and `warden_silences_active` from the database, so every worker
        reports the same figures."""
        for (severity, tier), n in (await self.trail.open_counts()).items():
            metrics.INCIDENTS_OPEN.labels(severity=severity, tier=tier).set(n)
        metrics.SILENCES_ACTIVE.set(await self.silences.active_count(self.clock()))
        return False

    def route_installers(self) -> list[RouteInstaller]:
        installers: list[RouteInstaller] = [self.interactivity.install] if self.interactivity else []
        return installers + ([self.api.install] if self.api else [])
