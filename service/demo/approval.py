"""The demo's held identity change: a gateway asks Warden before granting a role, the named approver approves in
the local Slack API server, and only then does the change run, raising no finding (docs/approvals.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlencode

import aiohttp
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier

from responders.notifiers.slack.approvals import ApprovalAction
from responders.notifiers.slack.interactivity import PATH
from service.demo.slack_api_server import Message, SlackApiServer
from service.runtime.settings import Settings
from service.runtime.worker import Runtime
from warden.client.approval_transports import HttpApprovals, proceed
from warden.contract.approval_requests import ApprovalRequest
from warden.contract.events import Agent, IdentityChange

log = logging.getLogger("warden.demo")
GATEWAY = "demo-gateway"
AGENT = "iam-agent-1"  # the example matrix's access-provisioner: its grants need its approver's approval
CHANGE = IdentityChange(operation="grant_role", target="user:dana", entitlement="support-agent")


@asynccontextmanager
async def local_slack(settings: Settings) -> AsyncIterator[tuple[Settings, SlackApiServer | None]]:
    """Without WARDEN_SLACK_TOKEN, the demo's own local Slack Web API (incidents go to the console and to it, and
    the approver's click comes from it), and a gateway token for the approval API. With a token set, the demo
    leaves that Slack alone: nobody there can be clicked for, so no change is held."""
    if settings.slack_token is not None:
        log.warning("WARDEN_SLACK_TOKEN is set: the demo holds no identity change for approval (it cannot click "
                    "Approve in that Slack for the approver)")
        yield settings, None
        return
    token = secrets.token_hex(16)
    # Slack's posting limit, as Slack enforces it (about one message per second per channel, a short burst): the
    # demo's messages go through Warden's per-channel budget, as they would to the real Slack.
    server = await SlackApiServer(token=f"xoxb-demo-{token}", rate=1.0, burst=3).start()
    try:
        yield settings.model_copy(update={
            "slack_token": SecretStr(f"xoxb-demo-{token}"), "slack_api_url": server.base_url,
            "slack_signing_secret": SecretStr(secrets.token_hex(16)), "notifiers": "console,slack",
            "gateway_tokens": SecretStr(f"{GATEWAY}:{secrets.token_hex(16)}"), "approvals_poll_s": 0.2,
        }), server
    finally:
        await server.stop()


async def hold_identity_change(rt: Runtime, slack: SlackApiServer, run_id: str, timeout: float) -> str | None:
    """Ask before the grant, approve it as the named approver in Slack, then run it (send its event). Returns the
    change's event id once it ran, or None when it was not approved (said in the log)."""
    s = rt.settings
    assert rt.web is not None and rt.holder is not None and s.gateway_tokens and s.slack_signing_secret
    policy = rt.holder.current
    assignment = policy.assignments[AGENT]
    approver = policy.owner_ref(assignment.workflow.approver or "")
    approver_user = approver.contact("slack") or ""
    base = f"http://{s.web_host}:{rt.web.port}"
    request = ApprovalRequest(request_id=f"{run_id}-held-grant", correlation_id=f"demo-{run_id}",
                              agent=Agent(id=AGENT), session_id=f"demo-{run_id}", identity_change=CHANGE)
    token = s.gateway_tokens.get_secret_value().partition(":")[2]
    async with HttpApprovals(base, token) as gateway:
        asked = await gateway.ask(request)
        log.warning("gateway holds %s on %s by %s: %s (approver %s, rule %s)", CHANGE.operation, CHANGE.target,
                    AGENT, asked.status.value, asked.approver, asked.rule)
        message = await _approval_message(slack, request.request_id or "", timeout)
        await _click(base, s.slack_signing_secret.get_secret_value(), request.request_id or "", approver_user,
                     message.channel)
        answer = await gateway.hold(request, timeout_s=timeout)
    if not proceed(answer):
        log.error("held identity change not approved: %s", answer.status.value)
        return None
    log.warning("approved in Slack by %s (%s): the gateway now runs %s on %s", answer.decided_by, approver_user,
                CHANGE.operation, CHANGE.target)
    event_id = f"{run_id}-held-grant-change"
    event = {"event_id": event_id, "ts": datetime.now(UTC).isoformat(), "kind": "identity_change",
             "agent": {"id": AGENT}, "session_id": f"demo-{run_id}", "identity_change": CHANGE.model_dump()}
    assert rt.kafka is not None
    producer = rt.kafka.producer()
    await producer.start()
    try:
        await producer.send_and_wait(s.topic_activity, json.dumps(event).encode(), key=AGENT.encode())
    finally:
        await producer.stop()
    return event_id


async def _approval_message(slack: SlackApiServer, request_id: str, timeout: float) -> Message:
    """The approver's message with the request's Approve button, once Warden posted it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in slack.roots():
            for block in message.blocks or []:
                if block.get("type") == "actions" and any(
                        e.get("action_id") == ApprovalAction.approve.value and e.get("value") == request_id
                        for e in block.get("elements", [])):
                    return message
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no approval message for {request_id} in Slack within {timeout:.0f}s")


async def _click(base: str, signing_secret: str, request_id: str, user: str, channel: str) -> None:
    """What Slack sends when the approver clicks Approve: a signed `block_actions` request."""
    payload = {"type": "block_actions", "user": {"id": user}, "channel": {"id": channel},
               "actions": [{"action_id": ApprovalAction.approve.value, "value": request_id, "type": "button"}]}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body) or ""
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
               "Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as session, session.post(f"{base}{PATH}", data=body,
                                                                headers=headers) as response:
        response.raise_for_status()
