"""The webhook's JSON body for each notice (pure): agent text redacted, the thread named by its root's id."""

from __future__ import annotations

import hashlib
from typing import Any

from responders.incidents import IncidentView
from responders.notifiers.base import AnyNotice, DigestNotice, GroupNotice
from warden.contract.findings import OwnerRef
from warden.contract.redact import redact_text

NOTIFIER = "webhook"  # the key of this notifier in an owner's contacts (an optional routing key for the receiver)
TEXT_MAX = 1000


def message_id(notice: AnyNotice) -> str:
    """The Standard Webhooks `webhook-id` of a notice: the same on every attempt of one notification, so a receiver
    drops a repeat; different for every other notification."""
    if isinstance(notice, DigestNotice):
        return f"warden-digest-{notice.digest.id}"
    if isinstance(notice, GroupNotice):
        named = ",".join(str(line.id) for line in notice.group.lines)
        return f"warden-group-{notice.group.id}-{notice.group.epoch}-{hashlib.sha256(named.encode()).hexdigest()[:12]}"
    return f"warden-notice-{notice.key or f'{notice.incident.id}-{notice.kind.value}'}"


def _owner(owner: OwnerRef) -> dict[str, Any]:
    return {"id": owner.id, "name": owner.name, "contact": owner.contact(NOTIFIER)}


def _incident(inc: IncidentView) -> dict[str, Any]:
    return {
        "id": inc.id, "status": inc.status.value, "rule": inc.rule, "severity": inc.severity,
        "title": redact_text(inc.title, TEXT_MAX), "agent_id": redact_text(inc.agent_id, TEXT_MAX),
        "workflow": inc.workflow, "target": redact_text(inc.target, TEXT_MAX), "frameworks": list(inc.frameworks),
        "count": inc.count, "first_seen": inc.first_seen.isoformat(), "last_seen": inc.last_seen.isoformat(),
        "evidence": {k: redact_text(v, TEXT_MAX) for k, v in inc.evidence.items()},
        "responder": _owner(inc.owners.responder),
    }


def body(notice: AnyNotice) -> dict[str, Any]:
    """What the receiver gets: `type` says which notice, `to` the owner it is for."""
    if isinstance(notice, DigestNotice):
        d = notice.digest
        return {"type": "review_digest", "to": _owner(notice.target), "digest": {
            "id": d.id, "since": d.since.isoformat(), "until": d.until.isoformat(), "incidents": list(d.incidents),
            "findings": d.findings, "waiting": d.waiting, "list_command": d.list_command}}
    if isinstance(notice, GroupNotice):
        g = notice.group
        return {"type": "group_digest", "to": _owner(notice.target), "group": {
            "id": g.id, "epoch": g.epoch, "severity": g.severity,
            "labels": {k: redact_text(v or "", TEXT_MAX) for k, v in g.labels.items()}, "leader_id": g.leader_id,
            "members": g.members, "findings": g.findings, "new_members": [line.id for line in g.lines],
            "list_command": g.list_command}}
    return {"type": f"incident.{notice.kind.value}", "to": _owner(notice.target),
            "incident": _incident(notice.incident), "note": redact_text(notice.note or "", TEXT_MAX) or None,
            "thread": None if notice.root is None else notice.root.ref}
