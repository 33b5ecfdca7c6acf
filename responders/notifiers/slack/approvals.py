"""The approver's Slack message for an approval request (pure): what the agent wants to do, why it needs a human,
and Approve / Deny. Every string from the request is redacted, then escaped: agent text is untrusted."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from responders.notifiers.slack.render import button_presses, safe, slack_escape, who
from warden.contract.approval_requests import APPROVE, DENY
from warden.contract.findings import OwnerRef
from warden.contract.redact import redact_value

ASK_EVENT = "warden_approval_request"  # the metadata of an ask, so a retried one finds it instead of posting twice


class ApprovalAction(StrEnum):
    """The buttons' action ids; the button's value is the request id."""

    approve = APPROVE
    deny = DENY


_STATUS_TEXT = {"approved": ":white_check_mark: Approved", "denied": ":no_entry: Denied",
                "expired": ":hourglass: Expired (no answer in time: the action stays blocked)"}


def describe(action: dict[str, Any]) -> str:
    """The held action in one mrkdwn line."""
    change = action.get("identity_change")
    if isinstance(change, dict):
        what = f"*{safe(change.get('operation', ''))}* on `{safe(change.get('target', ''))}`"
        if change.get("entitlement"):
            what += f" (entitlement `{safe(change['entitlement'])}`)"
        return "Identity change " + what
    tool = action.get("tool") or {}
    args = tool.get("arguments")
    shown = f" with `{slack_escape(redact_value(args, 500))}`" if args else ""
    return f"Tool call *{safe(tool.get('name', ''))}*{shown}"


def fallback(request_id: str, agent_id: str, action: dict[str, Any]) -> str:
    return f"Approval needed: agent {safe(agent_id)} wants to do: {describe(action)} (request {safe(request_id)})"


def request_blocks(*, request_id: str, agent_id: str, workflow: str | None, action: dict[str, Any], reason: str,
                   approver: OwnerRef, preface: str | None = None, status: str | None = None,
                   decided_by: str | None = None, buttons: bool = True) -> list[dict[str, Any]]:
    """The message: the action, the agent and workflow, why approval is needed, and, while pending, the buttons
    (for an owner who may decide)."""
    blocks: list[dict[str, Any]] = []
    if preface:
        blocks.append(_section(safe(preface)))
    blocks.append(_section(f":raised_hand: *Approval needed before an agent acts*\n{describe(action)}"))
    blocks.append({"type": "section", "fields": [
        _field(f"*Agent*\n{safe(agent_id)}"),
        _field(f"*Workflow*\n{safe(workflow or '(unowned)')}"),
        _field(f"*Why*\n{safe(reason)}"),
        _field(f"*Asked of*\n{who(approver)}"),
    ]})
    blocks.append({"type": "context", "elements": [_field(f"request `{safe(request_id)}`")]})
    if status is None and buttons:
        blocks.append({"type": "actions", "block_id": f"warden.approval.{request_id}"[:255], "elements": [
            _button(ApprovalAction.approve, "Approve", request_id, "primary"),
            _button(ApprovalAction.deny, "Deny", request_id, "danger"),
        ]})
    elif status is not None:
        by = f" by {safe(decided_by)}" if decided_by else ""
        blocks.append(_section(f"{_STATUS_TEXT.get(status, safe(status))}{by}"))
    return blocks


def ask_metadata(request_id: str, key: str) -> dict[str, Any]:
    """Attached to an ask: the request and the outbox row (notification) it delivers."""
    return {"event_type": ASK_EVENT, "event_payload": {"approval_request": request_id, "notification": key}}


def is_ask_of(message: dict[str, Any], request_id: str, key: str) -> bool:
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    return (meta.get("event_type") == ASK_EVENT and payload.get("approval_request") == request_id
            and payload.get("notification") == key)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900], "verbatim": True}}


def _field(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:1900], "verbatim": True}


def _button(action: ApprovalAction, label: str, request_id: str, style: str) -> dict[str, Any]:
    return {"type": "button", "action_id": action.value, "text": {"type": "plain_text", "text": label},
            "value": request_id, "style": style}


def approval_clicks(payload: dict[str, Any]) -> list[tuple[ApprovalAction, str, str, str]]:
    """(action, request id, Slack user, channel) for each approval button in a `block_actions` payload."""
    pressed = button_presses(payload)
    if pressed is None:
        return []
    user, channel, actions = pressed
    out = []
    for action in actions:
        try:
            kind = ApprovalAction(action.get("action_id"))
        except (ValueError, AttributeError):
            continue
        value = action.get("value")
        if isinstance(value, str) and value:
            out.append((kind, value, user, channel))
    return out
