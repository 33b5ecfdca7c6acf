"""`warden demo`: play the bundled scenario through a real worker and prove every stage delivered."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from responders.incident_responder import IncidentResponder
from service.demo import oauth_server
from service.demo.approval import hold_identity_change, local_slack
from service.demo.otlp import otlp_messages
from service.runtime.kafka_access import KafkaAccess
from service.runtime.settings import EXAMPLES, Settings
from service.runtime.worker import Runtime
from streams.ingest import ACTIVITY
from warden.contract.events import ActivityEvent
from warden.telemetry import metrics

SCENARIO = EXAMPLES / "scenario.jsonl"
DEMO_TOKENS = 2  # the scenario's ${OAUTH_TOKEN_n}: tokens its agents hold, which critical findings revoke
DEMO_SECRET_VAR = "WARDEN_DEMO_IDP_CLIENT_SECRET"
FAKE_ISSUER, FAKE_TOKEN = "https://idp.example.com", "not-a-real-token"  # without an OAuth server
SETTLE_S = 2.0
log = logging.getLogger("warden.demo")


@dataclass
class Plan:
    """The messages the demo sends, and what each stage must therefore deliver."""

    run_id: str
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    otlp_messages: list[tuple[bytes, bytes]] = field(default_factory=list)  # the same agents' turns as OTLP spans
    valid_events: int = 0
    invalid: int = 0
    finding_events: list[str] = field(default_factory=list)  # the event ids of this run's findings, as read


def build_plan(scenario: Path, max_message_bytes: int, fills: dict[str, str] | None = None) -> Plan:
    """Each scenario line is sent as one message; event ids get a run prefix so re-runs never collide. `${NAME}`
    placeholders (the OAuth issuer and the tokens the demo's agents hold) are filled from `fills`."""
    plan = Plan(run_id=uuid.uuid4().hex[:8])
    bad_key = f"demo-{plan.run_id}-bad".encode()
    text = scenario.read_text("utf-8")
    for name, value in (fills or {}).items():
        text = text.replace("${" + name + "}", value)
    valid: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            plan.messages.append((bad_key, line.encode()))
            plan.invalid += 1
            continue
        events = doc if isinstance(doc, list) else [doc]
        good = [e for e in events if _looks_valid(e)]
        for e in good:
            e["event_id"] = f"{plan.run_id}-{e['event_id']}"
        valid += good
        key = good[0]["agent"]["id"].encode() if good else bad_key
        plan.messages.append((key, json.dumps(doc).encode()))
        plan.valid_events += len(good)
        plan.invalid += (len(events) - len(good)) or (0 if events else 1)
    # Bad input a text file cannot carry: bytes that are not UTF-8, and a message over the size limit.
    plan.messages.append((bad_key, b'{"event_id": "\xff\xfe"}'))
    plan.messages.append((bad_key, b"[" + b" " * max_message_bytes + b"]"))
    plan.invalid += 2
    plan.otlp_messages, otlp_events = otlp_messages(valid, plan.run_id)
    plan.valid_events += otlp_events
    return plan


def _looks_valid(e: Any) -> bool:
    """Whether a scenario event meets the contract (the scenario holds deliberately broken ones too)."""
    try:
        ActivityEvent.model_validate(e)
    except ValueError:
        return False
    return True


# What the demo reads from the worker's own counters, as deltas over this run.
_COUNTED = {
    "events": metrics.EVENTS,
    "alerts": metrics.ALERTS,
    "responded": metrics.RESPONDED,
    "notifications": metrics.NOTIFICATIONS_DELIVERED,
}


async def send_scenario(settings: Settings) -> Plan:
    """Only the producer's half (compose's `demo-producer`): the scenario to WARDEN_KAFKA_BOOTSTRAP's activity
    topic, keyed by agent id, for the workers already running there; no OAuth server, so its tokens are fakes."""
    if not settings.kafka_bootstrap:
        raise OSError("--send-only needs WARDEN_KAFKA_BOOTSTRAP: the workers' Kafka")
    plan = build_plan(SCENARIO, settings.max_message_bytes, _fills(None, [FAKE_TOKEN] * DEMO_TOKENS))
    await _send(KafkaAccess.from_settings(settings), settings, plan)
    return plan


def _fills(issuer: oauth_server.OAuthServer | None, tokens: list[str]) -> dict[str, str]:
    """The scenario's placeholders: the issuer its agents' tokens come from, and the tokens."""
    fills = {"OAUTH_ISSUER": issuer.issuer if issuer else FAKE_ISSUER}
    fills.update({f"OAUTH_TOKEN_{i + 1}": t for i, t in enumerate(tokens)})
    return fills


async def _send(kafka: KafkaAccess, settings: Settings, plan: Plan) -> None:
    """Each planned message to the activity topic, then the spans to the span topic, keyed as planned,
    acknowledged one by one."""
    producer = kafka.producer(max_request_size=4 * settings.max_message_bytes)
    await producer.start()
    try:
        for key, value in plan.messages:
            await producer.send_and_wait(settings.input_topic(ACTIVITY), value, key=key)
        for key, value in plan.otlp_messages:
            await producer.send_and_wait(settings.input_topic("otlp"), value, key=key)
    finally:
        await producer.stop()


async def run_demo(settings: Settings, timeout: float, metrics_out: Path | None = None) -> bool:
    """Start a worker, send the scenario, wait for every stage, print the alerts and one JSON summary line; with
    `metrics_out`, write what /metrics served at the end there (the dashboard's expressions are checked on it)."""
    with ExitStack() as stack:
        issuer = _oauth_server(settings, stack)
        ok = await _run(settings, timeout, issuer)
    if metrics_out is not None:
        metrics_out.write_bytes(generate_latest())
    return ok


def _oauth_server(settings: Settings, stack: ExitStack) -> oauth_server.OAuthServer | None:
    """The real OAuth server the demo's tokens come from (oidc-provider, when Node.js is here); None, said plainly,
    when it cannot run: containment still runs, and its revocations fail and are escalated as they would."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = stack.enter_context(oauth_server.start(log_path=settings.data_dir / "oauth-server.log"))
    except oauth_server.OAuthServerUnavailable as exc:
        log.warning("no OAuth server for the demo (%s): token revocation will fail and be escalated",
                    str(exc).splitlines()[0])
        return None
    log.warning("started the demo OAuth server (oidc-provider) at %s", server.issuer)
    return server


def _demo_policy(settings: Settings, issuer: oauth_server.OAuthServer) -> Path:
    """The configured policy with its OAuth issuer pointed at the demo's server (secret passed by reference)."""
    folder = settings.data_dir / "demo-policy"
    shutil.rmtree(folder, ignore_errors=True)
    if settings.policy.is_dir():
        shutil.copytree(settings.policy, folder)
    else:
        folder.mkdir(parents=True)
        shutil.copy(settings.policy, folder / settings.policy.name)
    os.environ[DEMO_SECRET_VAR] = issuer.client_secret
    (folder / "99-demo-issuer.yaml").write_text(json.dumps(
        {"issuers": {"corp-idp": issuer.matrix_issuer(f"env:{DEMO_SECRET_VAR}")}}))
    return folder


async def _run(settings: Settings, timeout: float, issuer: oauth_server.OAuthServer | None) -> bool:
    tokens = [issuer.issue_token() for _ in range(DEMO_TOKENS)] if issuer else [FAKE_TOKEN] * DEMO_TOKENS
    if issuer is not None:
        settings = settings.model_copy(update={"policy": _demo_policy(settings, issuer)})
    plan = build_plan(SCENARIO, settings.max_message_bytes, _fills(issuer, tokens))
    before = {name: metrics.total(c) for name, c in _COUNTED.items()}
    started = datetime.now(UTC)
    held: str | None = None
    holds = False
    async with local_slack(settings) as (settings, slack), Runtime(settings) as rt:
        holds = slack is not None
        if slack is not None:  # before the scenario, which quarantines the agent that asks
            held = await hold_identity_change(rt, slack, plan.run_id, timeout)
            plan.valid_events += 2 if held else 0  # the approval event Warden published, and the change itself
        assert rt.kafka is not None
        await _send(rt.kafka, settings, plan)
        counts = await _wait_for_pipeline(rt.kafka, settings, plan, before, timeout)
        if rt.incidents is not None:  # incidents this run opened or grouped into
            counts["incidents"] = (await rt.incidents.store.incidents.counts(since=started))["incidents"]
            steps = await _wait_for_containment(rt.incidents, started, timeout)
            counts["contained"] = steps.get("done", 0)
            for status, n in sorted(steps.items()):
                log.warning("containment steps %s: %d", status, n)
            for incident_id in await rt.incidents.store.decisions.contained_incidents(started):
                entries = await rt.incidents.store.timeline.entries(incident_id)
                log.warning("timeline of incident #%d: %s", incident_id, " → ".join(
                    e.kind + (f" {e.detail['action']}" if "action" in e.detail else "") for e in entries))
    revoked = sum(1 for t in tokens if issuer is not None and not issuer.introspect(t)["active"])
    summary = {
        "events": counts["events"],
        "invalid": counts["invalid"],
        "findings": counts["findings"],
        "alerts": counts["alerts"],
        "incidents": counts.get("incidents", 0),
        "notifications": counts["notifications"],
        "contained": counts.get("contained", 0),
        "tokens_revoked": revoked,
        "approved_before_action": int(held is not None),
    }
    held_findings = [e for e in plan.finding_events if e == held]
    if held is not None:
        log.warning("the approved change %s raised %d findings", held, len(held_findings))
    ok = (
        all(v > 0 for k, v in summary.items() if k not in ("tokens_revoked", "approved_before_action"))
        and not held_findings and (held is not None or not holds)
        and (issuer is None or revoked == len(tokens))
        and counts["events"] == plan.valid_events
        and counts["invalid"] == plan.invalid
        and counts["responded"] == counts["findings"]
    )
    if not ok:
        log.error("demo incomplete: expected %d events and %d invalid; got %s (responded to %d findings)",
                  plan.valid_events, plan.invalid, summary, counts["responded"])
    print(json.dumps(summary), flush=True)
    return ok


async def _wait_for_containment(responder: IncidentResponder, since: datetime, timeout: float) -> dict[str, int]:
    """Containment steps of this run by status, once none is left to run (steps waiting for an approver wait for a
    human, so they are counted as they are)."""
    deadline = time.monotonic() + timeout
    while True:
        steps = await responder.store.decisions.step_counts(since)
        if not {"approved", "executing"} & steps.keys() or time.monotonic() > deadline:
            return steps
        await asyncio.sleep(0.2)


async def _wait_for_pipeline(
    kafka: KafkaAccess, settings: Settings, plan: Plan, before: dict[str, float], timeout: float
) -> dict[str, int]:
    """Read the DLQ and findings topics for this run, until all counts hold still after ingest is done."""
    consumer = kafka.consumer(
        settings.topic_dlq,
        settings.topic_findings,
        group_id=f"warden-demo-{plan.run_id}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    bad_key = f"demo-{plan.run_id}-bad".encode()
    prefix = f'"event_id":"{plan.run_id}-'.encode()
    otlp_prefix = f'"event_id":"otel:{plan.run_id}'.encode()  # the run id starts every trace id of its spans
    run_marker = f'"{plan.run_id}-'.encode()
    counts = {"events": 0, "invalid": 0, "findings": 0, "alerts": 0, "responded": 0, "notifications": 0}
    last_change, last_seen = time.monotonic(), dict(counts)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=250)).items():
                for r in records:
                    if tp.topic == settings.topic_dlq and r.key == bad_key:
                        counts["invalid"] += 1
                    elif tp.topic == settings.topic_dlq and r.value and run_marker in r.value:
                        counts["invalid"] += 1  # a bad element inside a batch that also held good events
                    elif tp.topic == settings.topic_findings and r.value and (prefix in r.value
                                                                              or otlp_prefix in r.value):
                        counts["findings"] += 1
                        plan.finding_events.append(str(json.loads(r.value).get("event_id")))
            for name, counter in _COUNTED.items():
                counts[name] = int(metrics.total(counter) - before[name])
            if counts != last_seen:
                last_change, last_seen = time.monotonic(), dict(counts)
            ingested = counts["events"] >= plan.valid_events and counts["invalid"] >= plan.invalid
            responded = counts["responded"] >= counts["findings"]
            if ingested and responded and time.monotonic() - last_change >= SETTLE_S:
                break
    finally:
        await consumer.stop()
    return counts
