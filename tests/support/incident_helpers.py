"""Helpers for incident tests: findings from the bundled matrix, a clock tests move, signed Slack requests."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from responders.incident_responder import IncidentResponder
from responders.store.common import utcnow
from service.runtime.catalogue import load as load_policy
from service.runtime.settings import BUNDLED_POLICY, Settings
from service.runtime.web import WebServer
from streams.detectors import unapproved_tool
from streams.detectors.base import Context, build_finding
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.contract.matrix import Matrix, RouteNotifications
from warden.policy import Policy

POLICY = load_policy(BUNDLED_POLICY)
# Tests written before grouping (issue 32) are about one incident's messages: every label is in their group key, so
# each incident is a group of its own and pages as it always did. Grouping tests give `running` the matrix they mean.
ONE_GROUP_PER_INCIDENT = POLICY.matrix.model_copy(update={"notifications": POLICY.matrix.notifications.model_copy(
    update={"group_by": ["workflow", "rule", "severity", "agent", "target"]}), "workflows": {
        wf_id: wf.model_copy(update={"notifications": RouteNotifications()})
        for wf_id, wf in POLICY.matrix.workflows.items()}})


class FakeClock:
    """Wall time that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def finding(agent: str, tool: str = "shell.exec", *, evidence: dict[str, str] | None = None,
            ts: datetime | None = None, policy: Policy = POLICY, shadow: bool = False,
            event_id: str | None = None) -> Finding:
    """An out-of-scope tool call by `agent`, built by the detectors' own finding builder from the matrix."""
    event = ActivityEvent.model_validate({
        "event_id": event_id or uuid.uuid4().hex, "ts": (ts or datetime.now(UTC)).isoformat(),
        "kind": "tool_call", "agent": {"id": agent}, "tool": {"name": tool},
    })
    built = build_finding(Context.of(event, policy), unapproved_tool.info, tool,
                          evidence if evidence is not None else {"tool": tool})
    assert built is not None
    return built.model_copy(update={"shadow": shadow}) if shadow else built


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` (sync or async) until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# The same for a worker process: a copy of the policy with every label in the group key, and no channel budget (the
# variables to set with it). Tests of one incident's messages under crashes and takeovers use them.
PER_INCIDENT = {"notifications": {"group_by": ["workflow", "rule", "severity", "agent", "target"]}}
UNLIMITED_BUDGET = {"WARDEN_SLACK_CHANNEL_RATE": "1000", "WARDEN_SLACK_CHANNEL_BURST": "1000"}


def per_incident_policy(policy: Path, folder: Path) -> Path:
    """`policy` (a folder) copied into `folder` with one group per incident."""
    shutil.copytree(policy, folder)
    (folder / "99-per-incident.yaml").write_text(json.dumps(PER_INCIDENT))
    return folder


@asynccontextmanager
async def running(settings: Settings, clock: Callable[[], datetime] | None = None,
                  matrix: Matrix = ONE_GROUP_PER_INCIDENT,
                  live_policy: Callable[[], str] | None = None) -> AsyncIterator[IncidentResponder]:
    responder = IncidentResponder(settings, clock=clock or utcnow, live_policy=live_policy,
                                  live_matrix=lambda: (f"test-{id(matrix)}", matrix))
    await responder.start()
    try:
        yield responder
    finally:
        await responder.stop()


@asynccontextmanager
async def served(settings: Settings, clock: Callable[[], datetime],
                 matrix: Matrix = ONE_GROUP_PER_INCIDENT) -> AsyncIterator[tuple[IncidentResponder, str]]:
    """A running responder with its routes (the incident API, Slack callbacks) on a local port; and its base URL."""
    async with running(settings, clock=clock, matrix=matrix) as responder:
        web = WebServer("127.0.0.1", 0, responder.route_installers())
        await web.start()
        try:
            yield responder, f"http://127.0.0.1:{web.port}"
        finally:
            await web.stop()


def block_actions(incident_id: int, action_id: str, user: str, channel: str = "C0FINOPS") -> bytes:
    """The form body Slack posts when someone clicks one of Warden's buttons."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "someone"},
        "channel": {"id": channel},
        "container": {"type": "message", "channel_id": channel},
        "actions": [{"action_id": action_id, "value": str(incident_id), "type": "button"}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request: its timestamp and the v0 HMAC signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"}
