"""Slack messages for incidents (pure): every string that came from an agent is redacted, then escaped."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from responders.digests import LISTED, DigestView
from responders.group_digest import GroupView
from responders.incidents import ACTIVE, Action, IncidentView, Status
from warden.contract.findings import OwnerRef
from warden.contract.redact import redact_text

METADATA_EVENT = "warden_incident"  # message metadata that lets Warden find its own root message again
REPLY_EVENT = "warden_incident_reply"  # the same for a thread reply, with the notification's key
GROUP_EVENT = "warden_group_digest"  # and its own digest message of a group
_SECTION_MAX = 2900  # Slack caps a section's text at 3000 characters
_FIELD_MAX = 1900  # and a field or context element at 2000
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")  # a Slack user (U…, or W… on Enterprise Grid)
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,}$")
NOTIFIER = "slack"  # the key of this notifier in an owner's contacts and members
_SEVERITY_ICON = {"info": "information_source", "low": "large_blue_circle", "medium": "large_orange_circle",
                  "high": "red_circle", "critical": "rotating_light"}


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control (`&`, `<`, `>`), per Slack's docs."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe(text: object, limit: int = 1000) -> str:
    """Redact secrets, then escape &, < and >, so `<!channel>`, `<@U…>` and `<url|label>` stay inert text."""
    return slack_escape(redact_text(str(text), limit))


def who(owner: OwnerRef | None) -> str:
    """An owner as mrkdwn. Only a well-formed Slack id from the matrix becomes a mention; names are escaped."""
    if owner is None:
        return "_(none named)_"
    label = safe(owner.name or owner.id)
    slack = owner.contact(NOTIFIER)
    if slack and USER_ID.match(slack):
        return f"<@{slack}> ({label})"
    if slack and _CHANNEL_ID.match(slack):
        return f"{label} (<#{slack}>)"
    return label


def _when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%SZ")


def _mrkdwn(text: str) -> dict[str, Any]:
    if len(text) > _FIELD_MAX:  # escaping can grow text; a cut can never create a `<`
        text = text[:_FIELD_MAX] + "…"
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    if len(text) > _SECTION_MAX:
        text = text[:_SECTION_MAX] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


def _button(action: Action, label: str, incident_id: int, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action.value,
        "text": {"type": "plain_text", "text": label},
        "value": str(incident_id),
    }
    if style:
        button["style"] = style
    return button


def buttons(inc: IncidentView) -> list[dict[str, Any]]:
    """The actions this incident still offers: lifecycle moves for its status, and the containment gate."""
    release = [_button(Action.release, "Release quarantine", inc.id)] if inc.quarantined else []
    if inc.status not in ACTIVE:
        return release
    out = []
    if inc.status is Status.open:
        out.append(_button(Action.acknowledge, "Acknowledge", inc.id, "primary"))
    else:
        out.append(_button(Action.resolve, "Resolve", inc.id, "primary"))
    if inc.decision is None and inc.awaiting_approval:  # buttons only where a binding gates a playbook
        out.append(_button(Action.approve, "Approve containment", inc.id))
        out.append(_button(Action.deny, "Deny containment", inc.id, "danger"))
    out.append(_button(Action.false_positive, "False positive", inc.id))
    out.append(_button(Action.silence, "Silence 1 h", inc.id))
    return out + release


def containment_text(inc: IncidentView) -> str:
    """What containment has done or an approval will run: each playbook and its steps, in order."""
    if not inc.containment:
        return "*Containment:* no playbook bound to this finding"
    books: dict[str, list[str]] = {}
    for step in inc.containment:
        label = f"{safe(step.action)} ({step.status.replace('_', ' ')})"
        if step.does:  # a dry run: what it would have done
            label = f"{safe(step.action)} (dry run: would {safe(step.does)})"
        books.setdefault(step.playbook, []).append(label)
    lines = [f"• `{safe(book)}`: " + " → ".join(steps) for book, steps in books.items()]
    head = ("*Approving runs:*" if inc.awaiting_approval and inc.decision is None else "*Containment:*")
    return f"{head} {safe(inc.containment_status)}\n" + "\n".join(lines)


def fallback(inc: IncidentView) -> str:
    """The plain `text` Slack shows in notifications and to clients that cannot draw blocks."""
    return (
        f"[{inc.severity.upper()}] {safe(inc.rule)}: agent {safe(inc.agent_id)} "
        f"(workflow {safe(inc.workflow or 'unowned')}), incident #{inc.id}, {inc.status.value}, "
        f"responder {safe(inc.owners.responder.name or inc.owners.responder.id)}"
    )


def incident_blocks(inc: IncidentView, preface: str | None = None) -> list[dict[str, Any]]:
    """The root message: what happened, the evidence, who is named, the mapping, the gate and the buttons."""
    icon = _SEVERITY_ICON.get(inc.severity, "warning")
    owners = inc.owners
    blocks: list[dict[str, Any]] = []
    if preface:
        blocks.append(_section(preface))
    blocks.append(_section(
        f":{icon}: *[{inc.severity.upper()}] {safe(inc.title)}*\n"
        f"Incident #{inc.id} · rule `{safe(inc.rule)}` · *{inc.status.value.replace('_', ' ')}*"
        + (f" by {safe(inc.status_by)}" if inc.status_by else "")
    ))
    blocks.append({"type": "section", "fields": [
        _mrkdwn(f"*Agent*\n{safe(inc.agent_id)}"),
        _mrkdwn(f"*Workflow*\n{safe(inc.workflow or '(unowned: default security owner)')}"),
        _mrkdwn(f"*Target*\n{safe(inc.target)}"),
        _mrkdwn(f"*Seen*\n{inc.count}× · first {_when(inc.first_seen)} · last {_when(inc.last_seen)}"),
    ]})
    evidence = "\n".join(f"• *{safe(k)}*: {safe(v)}" for k, v in inc.evidence.items()) or "_(none)_"
    blocks.append(_section(f"*Evidence* (redacted)\n{evidence}"))
    blocks.append({"type": "section", "fields": [
        _mrkdwn(f"*Responder*\n{who(owners.responder)}"),
        _mrkdwn(f"*Approver*\n{who(owners.approver)}"),
        _mrkdwn(f"*Detector*\n{who(owners.detector)}"),
        _mrkdwn(f"*Escalation*\nstep {min(inc.escalation_step + 1, max(len(owners.escalation), 1))}"
                f" of {len(owners.escalation)}"),
    ]})
    blocks.append({"type": "context", "elements": [
        _mrkdwn(f"*OWASP / NIST:* {safe(', '.join(inc.frameworks))}"),
        _mrkdwn(f"policy sha256 {safe(inc.policy_sha256[:12])} · key {inc.key[:12]}"
                + (f" · tags {safe(', '.join(inc.tags))}" if inc.tags else "")
                + (f" · leads group #{inc.group_id}: pages like it join the group's digest" if inc.group_id
                   and inc.group_role == "leader" else "")),
    ]})
    blocks.append(_section(containment_text(inc)))
    actions = buttons(inc)
    if actions:
        blocks.append({"type": "actions", "block_id": f"warden.incident.{inc.id}", "elements": actions})
    return blocks


def repeat_note(inc: IncidentView) -> str:
    """The thread reply for repeats, rendered at send time so a burst becomes one reply with the latest count."""
    evidence = ", ".join(f"{safe(k)}={safe(v)}" for k, v in inc.evidence.items())
    return (f"Seen again: {inc.count} findings so far, last at {_when(inc.last_seen)}."
            + (f" Latest evidence: {evidence}" if evidence else ""))


def escalation_preface(target: OwnerRef, note: str | None) -> str:
    return f":rotating_light: *Escalated to {who(target)}*: {safe(note or '')}"


def digest_fallback(digest: DigestView) -> str:
    """The plain `text` of a review digest."""
    return (f"Review digest for {safe(digest.responder.name or digest.responder.id)}: "
            f"{len(digest.incidents)} incident(s) kept for review, {digest.findings} finding(s), "
            f"since {_when(digest.since)}")


def digest_blocks(digest: DigestView) -> list[dict[str, Any]]:
    """The review digest: how many, per rule and workflow, the agents and targets seen most, and how to list them.
    Rule, workflow, agent and target came from agents or the topic: redacted, then escaped, like every message."""
    waiting = f" ({digest.waiting} more wait for the next digest)" if digest.waiting else ""
    blocks: list[dict[str, Any]] = [_section(
        f":mag: *Review digest* for {who(digest.responder)}\n"
        f"*{len(digest.incidents)}* incident(s) kept for review{waiting}, {digest.findings} finding(s), "
        f"{_when(digest.since)} to {_when(digest.until)}. Nobody was paged for these."
    )]
    rules = "\n".join(f"• `{safe(r.rule)}` in {safe(r.workflow or '(unowned)')}: {r.incidents} incident(s), "
                      f"{r.findings} finding(s)" for r in digest.by_rule)
    blocks.append(_section(f"*By rule and workflow*\n{rules}"))
    blocks.append({"type": "section", "fields": [
        _mrkdwn("*Top agents*\n" + ("\n".join(f"{safe(a, 200)} ({n})" for a, n in digest.agents) or "-")),
        _mrkdwn("*Top targets*\n" + ("\n".join(f"{safe(t, 200)} ({n})" for t, n in digest.targets) or "-")),
    ]})
    ids = ", ".join(f"#{i}" for i in digest.incidents[:LISTED])
    more = f" and {len(digest.incidents) - LISTED} more" if len(digest.incidents) > LISTED else ""
    blocks.append({"type": "context", "elements": [
        _mrkdwn(f"Incidents {ids}{more} · list them: `{safe(digest.list_command)}` or `{safe(digest.api_query)}`"),
    ]})
    return blocks


def metadata(inc: IncidentView) -> dict[str, Any]:
    """Attached to the root message, and to an escalation's message to the next owner, so an interrupted delivery can
    find it again instead of posting twice."""
    return {"event_type": METADATA_EVENT, "event_payload": {"incident_key": inc.key, "incident_id": inc.id}}


def is_root_of(message: dict[str, Any], inc: IncidentView) -> bool:
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    return (meta.get("event_type") == METADATA_EVENT and payload.get("incident_key") == inc.key
            and payload.get("incident_id") == inc.id)


def reply_metadata(inc: IncidentView, key: str) -> dict[str, Any]:
    """Attached to a thread reply: a retried notification finds the reply an interrupted attempt posted."""
    return {"event_type": REPLY_EVENT,
            "event_payload": {"incident_key": inc.key, "incident_id": inc.id, "notification": key}}


def is_reply_of(message: dict[str, Any], inc: IncidentView, key: str) -> bool:
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    return (meta.get("event_type") == REPLY_EVENT and payload.get("incident_key") == inc.key
            and payload.get("incident_id") == inc.id and payload.get("notification") == key)


def is_user_id(identity: str) -> bool:
    """Only a Slack user can click a button: a channel id is never an actor."""
    return bool(USER_ID.match(identity))


def button_presses(payload: dict[str, Any]) -> tuple[str, str, list[Any]] | None:
    """(Slack user, channel, actions) of a `block_actions` payload; None for any other payload or one without them."""
    if payload.get("type") != "block_actions":
        return None
    user = (payload.get("user") or {}).get("id")
    channel = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get("channel_id")
    if not isinstance(user, str) or not isinstance(channel, str):
        return None
    return user, channel, list(payload.get("actions") or [])


def _top_list(values: tuple[tuple[str, int], ...], total: int) -> str:
    shown = "\n".join(f"{safe(v, 200)} ({n})" for v, n in values) or "-"
    more = total - len(values)
    return shown + (f"\n_and {more} more_" if more > 0 else "")


def group_fallback(group: GroupView) -> str:
    """The plain `text` of a group's digest."""
    return (f"[{group.severity.upper()}] digest of {safe(group.title)}: {group.members} more incident(s) "
            f"({group.findings} finding(s)) after incident #{group.leader_id} paged; responder "
            f"{safe(group.responder.name or group.responder.id)}")


def group_blocks(group: GroupView) -> list[dict[str, Any]]:
    """A group's digest message: what the group is, how many joined it, the agents and targets seen most (top N,
    then "and K more"), how to list them, and the Silence 1 h button. Labels, agents and targets came from agents
    or the topic: redacted, then escaped."""
    icon = _SEVERITY_ICON.get(group.severity, "warning")
    labels = " · ".join(f"{safe(k)} `{safe(v or '-')}`" for k, v in group.labels.items()) or "(one group)"
    listed = (f"<{group.api_link}|list the group>" if group.api_link else f"`{safe(group.api_query)}`")
    blocks: list[dict[str, Any]] = [_section(
        f":{icon}: *[{group.severity.upper()}] Digest of group #{group.id}*: {labels}\n"
        f"*{group.members}* incident(s) joined after incident #{group.leader_id} paged "
        f"({group.findings} finding(s); {group.leaders} paged in all), {_when(group.opened_at)} to "
        f"{_when(group.last_at)}. Each is named in this thread; nobody was paged for them."
    )]
    blocks.append({"type": "section", "fields": [
        _mrkdwn(f"*Top agents* ({group.agents_total})\n" + _top_list(group.agents, group.agents_total)),
        _mrkdwn(f"*Top targets* ({group.targets_total})\n" + _top_list(group.targets, group.targets_total)),
    ]})
    blocks.append({"type": "context", "elements": [
        _mrkdwn(f"Responder {who(group.responder)} · {listed} or `{safe(group.list_command)}` · "
                f"announcement {group.epoch}"),
    ]})
    blocks.append({"type": "actions", "block_id": f"warden.group.{group.id}", "elements": [
        _button(Action.silence, "Silence 1 h", group.leader_id)]})
    return blocks


def group_lines(group: GroupView) -> str:
    """The thread reply that names the members this refresh carries, one line each (ids first: they are what the
    API and the CLI take)."""
    lines = [f"• #{ln.id} [{ln.severity}] agent {safe(ln.agent_id, 200)} → {safe(ln.target, 200)}"
             + (f" ({ln.count}×)" if ln.count > 1 else "") for ln in group.lines]
    more = f"\n_{group.unnamed} more follow in the next reply._" if group.unnamed else ""
    return f"{len(group.lines)} more in group #{group.id}:\n" + "\n".join(lines) + more


def group_metadata(group: GroupView) -> dict[str, Any]:
    """Attached to a group's digest message, so an interrupted post finds it instead of posting it twice."""
    return {"event_type": GROUP_EVENT, "event_payload": {"group_key": group.key, "group_id": group.id,
                                                         "epoch": group.epoch}}


def is_digest_of(message: dict[str, Any], group: GroupView) -> bool:
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    return (meta.get("event_type") == GROUP_EVENT and payload.get("group_id") == group.id
            and payload.get("epoch") == group.epoch)
