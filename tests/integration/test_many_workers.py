"""Many workers, one effect: two `warden run` processes share PostgreSQL and the activity partitions, talk to one
local Slack Web API (each through its own URL, so every request says who made it), and are paused (SIGSTOP) or
killed (SIGKILL) for real. Each test prints its figures (`-s` shows them): incidents, roots per incident,
duplicates, and how long takeovers took."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from responders.db import make_engine, session_factory
from responders.db.models import FindingRecord, Incident, IncidentMessage, Notification, TimelineEntry
from service.demo.slack_api_server import Message, Request, SlackApiServer
from service.runtime.settings import BUNDLED_POLICY, Settings
from service.runtime.topics import ensure_topics, topic_configs, topic_names
from tests.conftest import SLACK_TOKEN
from tests.support.incident_db import database_url
from tests.support.incident_helpers import UNLIMITED_BUDGET, eventually, per_incident_policy
from tests.support.kafka_helpers import committed_offsets, end_offsets, event, produce_events

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SLACK_TIMEOUT_S = 0.5
# What the outbox leases a row for right before a send, from the settings above: renewal grace (1 s) + the Slack
# notifier's bound for one send (2 calls × (4 tries + 3 waits) × the 0.5 s call timeout) + clock skew (1 s).
SEND_LEASE_S = 1.0 + 2 * 7 * SLACK_TIMEOUT_S + 1.0
QUEUE_LEASE_S = 2.0  # WARDEN_OUTBOX_LEASE_S: how long claimed rows wait for their worker before another takes them


@dataclass
class Worker:
    """One `python -m service run` process; its log (stderr) goes to a file."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "service", "run"], env=self.env, cwd=REPO,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def up(self, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        while "Warden worker up" not in self.log():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} did not start:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, sig)
            self.stopped = sig is signal.SIGSTOP or (self.stopped and sig is not signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Cluster:
    """Two workers of one consumer group on one database, and what the test can read of their work."""

    workers: dict[str, Worker]
    settings: Settings  # the topics and group the workers use (for producing)
    engine: AsyncEngine
    slack: SlackApiServer
    marks: dict[str, float] = field(default_factory=dict)
    progress: str = "nothing read yet"  # what `settled` saw last, for a failure message

    async def produce(self, events: Sequence[dict[str, Any]]) -> None:
        await produce_events(self.settings.kafka_bootstrap or "", self.settings.topic_activity, events)

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        async with session_factory(self.engine)() as s:
            return list((await s.execute(select(model).where(*where))).scalars())

    async def count(self, model: Any) -> int:
        async with session_factory(self.engine)() as s:
            return int((await s.execute(select(func.count()).select_from(model))).scalar_one())

    async def settled(self, incidents: int, findings: int) -> bool:
        """Every finding recorded, every incident opened, and no notification left pending."""
        recorded, opened = await self.count(FindingRecord), await self.count(Incident)
        notes = await self.rows(Notification)
        pending = [(n.incident_id, n.kind, n.attempts, n.claimed_until) for n in notes if n.status == "pending"]
        self.progress = (f"findings {recorded}/{findings}, incidents {opened}/{incidents}, notifications "
                         f"{len(notes)}, pending (incident, kind, attempts, claimed until): {pending[:10]}")
        return recorded >= findings and opened >= incidents and bool(notes) and not pending

    def logs(self) -> str:
        last = f"last seen: {self.progress}\n"
        return last + "\n".join(f"--- {w.name} ---\n{w.log()[-4000:]}" for w in self.workers.values())


# These tests are about each incident's own messages under takeovers (one root each, replies once): each incident is
# a group of its own (every label in the group key) and the channel budget is out of the way. The storm tests
# (tests/integration/test_storms.py, tests/integration/test_channel_budget.py) run with the defaults.


@asynccontextmanager
async def cluster(kafka_bootstrap: str, postgres_admin_url: str, slack: SlackApiServer, tmp_path: Path,
                  policy: Path = BUNDLED_POLICY, *, per_incident: bool = True) -> AsyncIterator[Cluster]:
    """Start workers `a` and `b` (same group, topics and database; each with its own Slack URL) and wait until
    both are up; stop them (SIGCONT, SIGTERM) at the end. `per_incident`: one group per incident and no channel
    budget, as before grouping (issue 32)."""
    if per_incident:
        policy = per_incident_policy(policy, tmp_path / "policy-per-incident")
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(kafka_bootstrap=kafka_bootstrap, app_id=f"warden-many-{suffix}",
                        topic_activity=f"m{suffix}.activity", topic_findings=f"m{suffix}.findings",
                        topic_dlq=f"m{suffix}.dlq", topic_control=f"m{suffix}.control",
                        topic_revocations=f"m{suffix}.revocations", topic_otlp=f"m{suffix}.otlp",
                        topic_approval_requests=f"m{suffix}.approval.requests",
                        topic_approval_decisions=f"m{suffix}.approval.decisions",
                        topic_approval_dlq=f"m{suffix}.approval.dlq")
    # Created once here, so the two workers starting together do not race to create them.
    await ensure_topics(kafka_bootstrap, topic_names(settings), settings.topic_partitions,
                        configs=topic_configs(settings))
    async with database_url("postgresql", tmp_path, postgres_admin_url) as db_url:
        base = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
        common = {
            "WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, "WARDEN_DATABASE_URL": db_url, "WARDEN_POLICY": str(policy),
            "WARDEN_APP_ID": settings.app_id, "WARDEN_TOPIC_ACTIVITY": settings.topic_activity,
            "WARDEN_TOPIC_FINDINGS": settings.topic_findings, "WARDEN_TOPIC_DLQ": settings.topic_dlq,
            "WARDEN_TOPIC_CONTROL": settings.topic_control, "WARDEN_TOPIC_REVOCATIONS": settings.topic_revocations,
            "WARDEN_TOPIC_OTLP": settings.topic_otlp,
            "WARDEN_TOPIC_APPROVAL_REQUESTS": settings.topic_approval_requests,
            "WARDEN_TOPIC_APPROVAL_DECISIONS": settings.topic_approval_decisions,
            "WARDEN_TOPIC_APPROVAL_DLQ": settings.topic_approval_dlq,
            "WARDEN_SEAL_KEY": Fernet.generate_key().decode(),  # one key: a token sealed by one opens on the other
            "WARDEN_WEB_BIND": "127.0.0.1:0", "WARDEN_KAFKA_SESSION_TIMEOUT_S": "6",
            "WARDEN_KAFKA_HEARTBEAT_INTERVAL_S": "1", "WARDEN_KAFKA_REBALANCE_TIMEOUT_S": "3",
            "WARDEN_SLACK_TOKEN": SLACK_TOKEN, "WARDEN_SLACK_TIMEOUT_S": str(SLACK_TIMEOUT_S),
            "WARDEN_OUTBOX_LEASE_S": str(QUEUE_LEASE_S), "WARDEN_OUTBOX_POLL_S": "0.2",
            "WARDEN_NOTIFY_RETRY_BACKOFF_S": "0.2", "WARDEN_NOTIFY_MAX_ATTEMPTS": "8",
            "WARDEN_ESCALATION_POLL_S": "0.5", "PYTHONUNBUFFERED": "1",
        } | (UNLIMITED_BUDGET if per_incident else {})
        workers = {}
        for name in ("a", "b"):
            env = base | common | {"WARDEN_DATA_DIR": str(tmp_path / name),
                                   "WARDEN_SLACK_API_URL": slack.url_for(name)}
            workers[name] = Worker(name, env, tmp_path / f"{name}.log")
        engine = make_engine(db_url)
        try:
            for w in workers.values():
                w.start()
            await asyncio.gather(*(w.up() for w in workers.values()))
            yield Cluster(workers, settings, engine, slack)
        finally:
            for w in workers.values():
                w.stop()
            await engine.dispose()


async def positions(c: Cluster) -> str:
    """Where each consumer group stands on its topic, partition by partition (end offset, committed offset)."""
    kafka = c.settings.kafka_bootstrap or ""
    out = []
    for group, topic in ((f"{c.settings.app_id}.ingest", c.settings.topic_activity),
                         (c.settings.app_id, c.settings.topic_findings)):
        ends = await end_offsets(kafka, topic)
        done = await committed_offsets(kafka, group, topic)
        out.append(f"{group} on {topic}: " + ", ".join(f"p{p} {done.get(p)}/{end}" for p, end in ends.items()))
    return "\n".join(out)


async def until(check: Callable[[], Any], timeout: float, what: str, c: Cluster) -> None:
    """`eventually`, with where the groups stand and both workers' logs in the failure."""
    try:
        await eventually(check, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await positions(c)}\n{c.logs()}") from None


def strays(run: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """One event from each of `n` agents no workflow owns: an unowned_agent finding each (a stateless rule, so the
    windows of the other issue play no part), one incident per agent, for the security owner (C0SECOPS)."""
    return [event(f"stray-{run}-{i}", kind="prompt", content={"prompt": f"p{i}"}) for i in range(start, start + n)]


def roots_by_incident(slack: SlackApiServer, channel: str = "C0SECOPS") -> dict[int, list[Message]]:
    """Warden's root messages in the responder's channel (the strays': secops), by the incident id in their
    metadata, in the order posted. An escalation's message to the next owner carries the key too, elsewhere."""
    out: dict[int, list[Message]] = defaultdict(list)
    for m in slack.roots(channel):
        if m.metadata:
            out[m.metadata["event_payload"]["incident_id"]].append(m)
    return out


def claims_lost(w: Worker) -> int:
    return w.log().count("claim lost")


async def check_one_root_each(c: Cluster, incidents: int) -> dict[int, list[Message]]:
    """Exactly one root per incident on Slack, and the stored reference is the root posted first."""
    roots = roots_by_incident(c.slack)
    stored = {m.incident_id: m.ref for m in await c.rows(IncidentMessage)}
    per_incident = Counter(len(r) for r in roots.values())
    duplicated = {i: [m.ts for m in r] for i, r in roots.items() if len(r) > 1}
    not_first = {i: (stored.get(i), r[0].ts) for i, r in roots.items() if stored.get(i) != r[0].ts}
    print(f"\n{len(roots)} incidents with a root; roots per incident: {dict(per_incident)}; incidents with more "
          f"than one: {len(duplicated)}; whose stored root is not the first posted: {len(not_first)}")
    assert len(roots) == incidents, f"{len(roots)} incidents have a root, expected {incidents}"
    assert not duplicated, f"incidents with more than one root message: {duplicated}"
    assert not not_first, f"stored root ref is not the first one posted (stored, first): {not_first}"
    return roots


# -- a worker paused past its lease in the middle of a delivery batch ----------------------------------------------


async def test_a_worker_paused_past_its_lease_posts_no_second_root_nor_reply(
    kafka_bootstrap: str, postgres_admin_url: str, slack_api: SlackApiServer, tmp_path: Path
) -> None:
    n, pause_s, pause_at = 50, SEND_LEASE_S + 3, 5
    run = uuid.uuid4().hex[:6]
    # Every call answers slowly, so a batch takes longer than the queue lease (its waiting rows are held while it
    # runs, so the workers do not take rows from each other for that), and a is paused in the middle of a batch.
    slack_api.fail(None, times=10**6, delay_s=0.1)
    async with cluster(kafka_bootstrap, postgres_admin_url, slack_api, tmp_path) as c:
        a = c.workers["a"]
        loop = asyncio.get_running_loop()
        posted_by_a = 0

        def pause_a(request: Request) -> None:  # on a's 5th root post, after Slack posted it, before the reply
            nonlocal posted_by_a
            if request.worker != "a" or request.method != "chat.postMessage" or "thread_ts" in request.args:
                return
            posted_by_a += 1
            if posted_by_a == pause_at:
                a.signal(signal.SIGSTOP)
                c.marks["paused"] = time.monotonic()
                loop.call_later(pause_s, a.signal, signal.SIGCONT)

        slack_api.watch(pause_a)
        await c.produce(strays(run, n) + strays(run, n))  # an incident per agent, then a repeat of each
        await until(lambda: "paused" in c.marks, 30, "worker a paused mid-batch", c)
        await until(lambda: c.settled(n, 2 * n), 30 + pause_s, "every notification settled", c)
        await until(lambda: not a.stopped, pause_s + 5, "worker a resumed", c)
        await asyncio.sleep(2.0)  # a resumes with claims it lost: give it time to (not) act on them
        await until(lambda: c.settled(n, 2 * n), 10, "still settled after a resumed", c)
        roots = await check_one_root_each(c, n)
        notes = await c.rows(Notification)
        taken_over = [x for x in notes if x.attempts > 1]
        by_a = sum(1 for r in roots.values() if r[0].worker == "a")
        looked_up = len([r for r in slack_api.calls("conversations.history") if r.worker == "b"])
        replies = {i: len(slack_api.replies(r[0])) for i, r in roots.items()}
        repeats = Counter(x.incident_id for x in notes if x.kind == "repeat" and x.status == "delivered")
        twice = {i: (replies[i], repeats[i]) for i in roots if replies[i] != repeats[i]}
        print(f"paused a for {pause_s:.0f}s at its root post #{pause_at} (send lease {SEND_LEASE_S:.0f}s); roots "
              f"posted by a: {by_a}, by b: {n - by_a}; rows delivered after a takeover: {len(taken_over)}; b's "
              f"history look-ups: {looked_up}; claims a found lost on resuming: {claims_lost(a)}, b: "
              f"{claims_lost(c.workers['b'])}; thread replies per incident {dict(Counter(replies.values()))}, "
              f"not one per repeat notification: {len(twice)}; chat.update calls {len(slack_api.calls('chat.update'))}"
              f" for {sum(repeats.values())} repeats")
        assert all(x.status == "delivered" for x in notes)
        assert not twice, f"(replies, repeat notifications) per incident: {twice}"
        assert taken_over and looked_up, "b took over a's rows, and looked for the root a was posting"
        assert claims_lost(a) >= 1, f"a resumed holding claims b had taken: it must say it lost them\n{a.log()}"


# -- a worker killed mid-stream, never restarted --------------------------------------------------------------------


async def test_a_killed_workers_partitions_and_claims_are_taken_over(
    kafka_bootstrap: str, postgres_admin_url: str, slack_api: SlackApiServer, tmp_path: Path
) -> None:
    n, kill_at = 40, 5
    run = uuid.uuid4().hex[:6]
    slack_api.fail(None, times=10**6, delay_s=0.1)
    async with cluster(kafka_bootstrap, postgres_admin_url, slack_api, tmp_path) as c:
        b = c.workers["b"]
        posted_by_b: list[Message] = []

        def kill_b(request: Request) -> None:  # on b's 5th root post, after Slack posted it: b dies mid-call
            if request.worker != "b" or request.method != "chat.postMessage" or "thread_ts" in request.args:
                return
            posted_by_b.append(slack_api.messages[-1])  # just posted, before this hook ran
            if len(posted_by_b) == kill_at:
                b.signal(signal.SIGKILL)
                c.marks["killed"], c.marks["killed_wall"] = time.monotonic(), time.time()

        slack_api.watch(kill_b)
        await c.produce(strays(run, n))  # one violation per agent: an incident each
        await until(lambda: "killed" in c.marks, 30, "worker b killed mid-delivery", c)
        await c.produce(strays(run, n))  # and one more per agent after the kill, on every partition: repeats
        await until(lambda: c.settled(n, 2 * n), 60, "every violation recorded and every notification settled", c)
        killed_at = datetime.fromtimestamp(c.marks["killed_wall"], UTC)
        findings = await c.rows(FindingRecord)
        incidents = await c.rows(Incident)
        notes = await c.rows(Notification)
        roots = await check_one_root_each(c, n)
        takeover_s = max(f.recorded_at for f in findings) - killed_at
        last_delivery_s = max(x.delivered_at for x in notes if x.delivered_at) - killed_at
        replies = {i: len(c.slack.replies(r[0])) for i, r in roots.items()}
        repeats = Counter(x.incident_id for x in notes if x.kind == "repeat" and x.status == "delivered")
        print(f"killed b at its root post #{kill_at}; {len(incidents)} incidents, {len(findings)} violations "
              f"recorded of {2 * n}; counts {dict(Counter(i.count for i in incidents))}; thread replies per "
              f"incident {dict(Counter(replies.values()))}; last violation recorded {takeover_s.total_seconds():.1f}s "
              f"after the kill (partitions taken over), last delivery {last_delivery_s.total_seconds():.1f}s after")
        assert len(incidents) == n and all(i.count == 2 for i in incidents), "one incident per agent, both seen"
        assert len(findings) == 2 * n, "no violation lost"
        assert all(x.status == "delivered" for x in notes)
        assert replies == {i: repeats[i] for i in roots}, "one thread reply per repeat notification, none twice"
        stored = {m.incident_id: m.ref for m in await c.rows(IncidentMessage)}
        killed_root = posted_by_b[kill_at - 1]
        assert killed_root.metadata is not None
        killed_incident = killed_root.metadata["event_payload"]["incident_id"]
        assert stored[killed_incident] == killed_root.ts, "a found the root b posted as it died, and kept it"
        [in_flight] = [x for x in notes if x.incident_id == killed_incident and x.kind == "root"]
        # b's claim, then a's (more when a's own first try is cut short under load): a took it over
        assert in_flight.attempts >= 2 and in_flight.delivered_at is not None
        claim_takeover_s = (in_flight.delivered_at - killed_at).total_seconds()
        print(f"the root b was posting when killed: recorded by a {claim_takeover_s:.1f}s after the kill (send "
              f"lease {SEND_LEASE_S:.0f}s), as b's post")


# -- escalation with two workers ------------------------------------------------------------------------------------


async def test_with_two_workers_each_escalation_step_happens_once(
    kafka_bootstrap: str, postgres_admin_url: str, slack_api: SlackApiServer, tmp_path: Path
) -> None:
    n = 20
    policy = tmp_path / "policy"
    shutil.copytree(BUNDLED_POLICY, policy)
    owners = policy / "00-owners.yaml"  # the default chain (secops, then the CISO) in seconds, not minutes
    owners.write_text(owners.read_text().replace("ack_timeout: 15m", "ack_timeout: 2s")
                      .replace("ack_timeout: 30m", "ack_timeout: 2s"))
    slack_api.fail(None, times=10**6, delay_s=0.05)
    async with cluster(kafka_bootstrap, postgres_admin_url, slack_api, tmp_path, policy=policy) as c:
        await c.produce(strays(uuid.uuid4().hex[:6], n))

        async def exhausted() -> bool:
            done = await c.rows(TimelineEntry, TimelineEntry.kind == "escalation_exhausted")
            return len({e.incident_id for e in done}) == n and await c.settled(n, n)

        await until(exhausted, 45, "every chain exhausted and every notification settled", c)
        await asyncio.sleep(1.5)  # a few more escalation passes on both workers: nothing more may happen
        timeline = await c.rows(TimelineEntry)
        notes = await c.rows(Notification)
        roots = await check_one_root_each(c, n)
        logs = c.logs()
    kinds = Counter((e.incident_id, e.kind) for e in timeline)
    escalated = Counter(kinds[(i, "escalated")] for i in roots)
    exhausted_once = Counter(kinds[(i, "escalation_exhausted")] for i in roots)
    to_ciso = [m for m in slack_api.roots("D0CISO")]
    ciso_per_incident = Counter(m.text.split("incident #")[1].split(",")[0] for m in to_ciso)
    replies = Counter(len(slack_api.replies(r[0])) for r in roots.values())
    print(f"{n} incidents; escalated entries per incident {dict(escalated)}; exhausted {dict(exhausted_once)}; "
          f"messages to the CISO {len(to_ciso)} ({len(ciso_per_incident)} incidents); root thread replies per "
          f"incident {dict(replies)}; by worker {dict(Counter(m.worker for m in to_ciso))}")
    assert escalated == {1: n} and exhausted_once == {1: n}, "each step once per incident"
    undelivered = [(x.incident_id, x.kind, x.status, x.attempts, x.last_error) for x in notes
                   if x.status != "delivered"]
    assert sorted(Counter(x.kind for x in notes if x.status == "delivered").items()) == [
        ("escalation", n), ("root", n)], f"undelivered: {undelivered}\n{logs}"
    assert len(to_ciso) == n and set(ciso_per_incident.values()) == {1}, "one message to the next owner each"
    assert replies == {1: n}, "one escalation reply in each root's thread"
