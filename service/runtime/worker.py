"""Start and stop a whole Warden worker: broker (embedded if unset), topics, policy, responder, web, faust."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import AsyncExitStack
from pathlib import Path

import faust

from responders.audit_export import AuditExporter
from responders.base import Responder, RouteInstaller, WebRoutes
from responders.incident_responder import IncidentResponder
from responders.store.common import utcnow
from responders.trace_export import TraceExporter
from service.runtime.app import build_app
from service.runtime.approval_host import ApprovalHost
from service.runtime.broker import EmbeddedBroker
from service.runtime.catalogue import load
from service.runtime.containment import ContainmentHost
from service.runtime.control import ControlView
from service.runtime.ingest.checkpoint import Checkpoint
from service.runtime.ingest.feed import BatchLimits
from service.runtime.ingest.loop import BatchIngest
from service.runtime.kafka_access import KafkaAccess
from service.runtime.lag import ConsumerLag
from service.runtime.policy_holder import PolicyHolder
from service.runtime.policy_watch import PolicyWatcher
from service.runtime.readiness import Readiness
from service.runtime.settings import Settings
from service.runtime.topics import ensure_topics, topic_configs, topic_names
from service.runtime.web import WebServer
from service.runtime.worker_errors import check_bind, check_database
from warden import __version__
from warden.kit.loop import PollingLoop

log = logging.getLogger("warden")


def _fast_group_timings(s: Settings) -> Settings:
    """The embedded broker serves one local worker: join its group in seconds (unless set explicitly)."""
    fast = {"kafka_session_timeout_s": 6.0, "kafka_heartbeat_interval_s": 1.0, "kafka_rebalance_timeout_s": 3.0}
    return s.model_copy(update={k: v for k, v in fast.items() if k not in s.model_fields_set})


# Net allocations of tracked objects between young collections (CPython's default: 700). 50,000 made each one a
# 10-16 ms pause in the bench; the ingest also collects the young generation at each of its commits.
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Once started: move everything alive now (policy, modules, clients) out of the collector's sight, and
    collect the young generation less often. Detector state keeps many pydantic objects alive, which makes every
    default young collection walk them: decode+detect ran 27.6k → 48.8k events/s with this (RSS in bench/)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


class _HostedWorker(faust.Worker):
    """faust's worker inside Warden's process: signals belong to the CLI, which stops the parts in order."""

    def install_signal_handlers(self) -> None:
        return None


class Runtime:
    """One worker process's parts, started in dependency order and stopped in reverse."""

    def __init__(self, settings: Settings, responder: Responder | None = None, *, limits: BatchLimits | None = None,
                 checkpoint: Checkpoint | None = None) -> None:
        self.settings = settings
        self._given = responder
        # The built-in responder, made by `start` once the policy is loaded (its timeline entries name the live
        # policy); None when another responder was given, which has no database for the parts below to share.
        self.incidents: IncidentResponder | None = None
        self._limits = limits  # the ingest's batches (None: the defaults)
        self._checkpoint = checkpoint  # how the ingest settles and commits a batch (None: the product's)
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = settings.kafka_bootstrap or ""
        self.kafka: KafkaAccess | None = None  # set by start(): the bootstrap and security of every client
        self.holder: PolicyHolder | None = None
        self.app: faust.App | None = None
        self.ingest: BatchIngest | None = None
        self.web: WebServer | None = None
        self.control: ControlView | None = None
        self.containment: ContainmentHost | None = None
        self.approvals: ApprovalHost | None = None
        self._stack = AsyncExitStack()

    @property
    def responder(self) -> Responder:
        if self._given is not None:
            return self._given
        assert self.incidents is not None, "the built-in responder is made by start()"
        return self.incidents

    async def start(self) -> Runtime:
        s = self.settings
        check_bind(s.web_host, s.web_port)  # a taken port fails now, not after the broker, database and faust
        policy = load(s.policy)  # fail before starting anything if the policy is unusable
        self.holder = holder = PolicyHolder(policy)
        if self._given is None:  # every timeline entry names the policy live then
            self.incidents = IncidentResponder(
                s, live_policy=lambda: holder.current.sha256,
                live_matrix=lambda: (holder.current.sha256, holder.current.matrix))
        incidents = self.incidents
        if incidents is not None:  # and if the database does not answer
            await check_database(incidents.engine)
        s.data_dir.mkdir(parents=True, exist_ok=True)  # faust's datadir, SQLite and the broker log live here
        if not s.kafka_bootstrap:
            s = self._embed_broker()
        self.kafka = kafka = KafkaAccess.from_settings(s, self.bootstrap)
        created = await ensure_topics(kafka, topic_names(s), s.topic_partitions, configs=topic_configs(s))
        if created:
            log.warning("created topics %s (%d partitions each)", ", ".join(created), s.topic_partitions)
        # The responder first (its database migrated, its loops running): the findings agent and the approvals
        # consumer, which join their groups next, hand it work as soon as they have joined. Stopped last.
        await self.responder.start()
        self._stack.push_async_callback(self.responder.stop)
        self.control = ControlView(kafka, s.topic_control)
        await self.control.start()
        self._stack.push_async_callback(self.control.stop)
        self.app, publish, self.ingest = build_app(s, kafka, self.holder, self.responder,
                                                   quarantined=self.control.agents, sealer=s.sealer(),
                                                   limits=self._limits, checkpoint=self._checkpoint)
        worker = _HostedWorker(
            self.app, loop=asyncio.get_running_loop(), daemon=False, override_logging=False, quiet=True
        )
        worker.spinner = None  # no terminal spinner: stdout carries the demo's JSON line
        if incidents is not None:  # approvals share its database and Slack notifier
            # Started before the app: its two consumers join their groups in the background, alongside the others.
            self.approvals = ApprovalHost(s, kafka, incidents, self.holder, self.control.agents,
                                          history=self.ingest.provenance)
            self._stack.push_async_callback(self.approvals.stop)
            await self.approvals.start()
        await self._start_together(worker, self.ingest)
        if incidents is not None:  # containment acts on the incidents it records
            self.containment = ContainmentHost(s, kafka, incidents, self.holder)
            self._stack.push_async_callback(self.containment.stop)
            await self.containment.start()
        await self._start_reporting(s, kafka, self.ingest)
        installers = self.responder.route_installers() if isinstance(self.responder, WebRoutes) else []
        if self.approvals is not None:
            installers += self.approvals.route_installers()
        web = await self._serve(installers)
        watcher = PolicyWatcher(s.policy, self.holder, publish, s.policy_reload_s)
        watcher.loop.start()
        self._stack.push_async_callback(watcher.loop.stop)
        tune_gc()
        log.warning("Warden worker up: kafka=%s policy=%s (sha256 %s) web=http://%s:%d",
                    self.bootstrap, s.policy, policy.sha256[:12], s.web_host, web.port)
        return self

    async def _start_reporting(self, s: Settings, kafka: KafkaAccess, ingest: BatchIngest) -> None:
        """What reports on the work rather than doing it: the audit and trace exports (when set) and consumer lag."""
        if s.topic_audit and self.incidents is not None:
            await self._export_audit(s.topic_audit, self.incidents)
        if s.otlp_export_endpoint and self.incidents is not None:
            self._export_traces(s.otlp_export_endpoint, self.incidents)
        groups = {topic: ingest.group for topic in ingest.topics} | {s.topic_findings: s.app_id}
        lag = ConsumerLag(kafka, groups, s.lag_poll_s)
        await lag.start()
        self._stack.push_async_callback(lag.stop)

    def _embed_broker(self) -> Settings:
        """Start the embedded Tansu broker; the settings with its fast group timings (unless set explicitly)."""
        s = self.settings = _fast_group_timings(self.settings)
        self.broker = EmbeddedBroker(log_path=Path(s.data_dir) / "tansu.log").start()
        self._stack.callback(self.broker.stop)
        self.bootstrap = self.broker.bootstrap
        log.warning("WARDEN_KAFKA_BOOTSTRAP is unset: started the embedded Tansu broker on %s "
                    "(memory only; data is lost when Warden stops)", self.bootstrap)
        return s

    async def _start_together(self, worker: faust.Worker, ingest: BatchIngest) -> None:
        """The ingest joins its group while faust joins the app's (each join takes the broker's initial rebalance
        delay, ~3 s): the findings it makes before the agent is up wait on their topic. Stopped in reverse: the
        ingest (its batch in flight committed) before the app."""
        started = await asyncio.gather(worker.start(), ingest.start(), return_exceptions=True)
        for part, outcome in zip((worker.stop, ingest.stop), started, strict=True):
            if not isinstance(outcome, BaseException):
                self._stack.push_async_callback(part)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _serve(self, installers: list[RouteInstaller]) -> WebServer:
        """The HTTP server, last: /readyz (service.runtime.readiness) answers for the parts started before it."""
        assert self.ingest is not None and self.holder is not None
        engine = self.incidents.engine if self.incidents is not None else None
        installers.append(Readiness(self.ingest, self.holder, engine).install)
        self.web = web = WebServer(self.settings.web_host, self.settings.web_port, installers)
        await web.start()
        self._stack.push_async_callback(web.stop)
        return web

    async def _export_audit(self, topic: str, incidents: IncidentResponder) -> None:
        """Findings and timeline entries on `topic` (created if missing), published after they are committed."""
        assert self.kafka is not None
        await ensure_topics(self.kafka, [topic], self.settings.topic_partitions)
        producer = self.kafka.producer(acks="all")
        await producer.start()
        self._stack.push_async_callback(producer.stop)

        async def publish(records: list[tuple[bytes, bytes]]) -> None:
            sent = [await producer.send(topic, value=value, key=key) for key, value in records]
            for delivery in sent:
                await delivery

        exporter = AuditExporter(incidents.engine, publish, utcnow)
        loop = PollingLoop("audit-export", 2.0, exporter.export, logging.getLogger("warden.audit"))
        loop.start()
        self._stack.push_async_callback(loop.stop)
        log.warning("exporting findings (OCSF Detection Finding) and timeline entries to %s", topic)

    def _export_traces(self, endpoint: str, incidents: IncidentResponder) -> None:
        """Findings and containment steps as OTLP log events on the agents' traces (experimental, docs/otel.md)."""
        exporter = TraceExporter(incidents.engine, endpoint, utcnow, service=self.settings.app_id,
                                 version=__version__, timeout_s=self.settings.otlp_export_timeout_s)
        self._stack.push_async_callback(exporter.close)
        loop = PollingLoop("trace-export", 2.0, exporter.export, logging.getLogger("warden.trace_export"))
        loop.start()
        self._stack.push_async_callback(loop.stop)
        log.warning("exporting findings and containment steps into the agents' traces at %s (experimental)",
                    exporter.url)

    async def stop(self) -> None:
        await self._stack.aclose()

    async def __aenter__(self) -> Runtime:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
