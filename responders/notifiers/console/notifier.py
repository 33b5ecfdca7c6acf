"""The console notifier: one log line per notice, naming the responder from the matrix (the embedded default)."""

from __future__ import annotations

import logging

from responders.digests import LISTED, DigestView
from responders.group_digest import GroupView
from responders.incidents import IncidentView
from responders.notifiers.base import AnyNotice, ApprovalNotice, DigestNotice, GroupNotice, Outgoing
from responders.store.notices import NoticeKind, Posted
from warden.contract.findings import OwnerRef
from warden.contract.redact import redact_text

log = logging.getLogger("warden.alert")
LINE_MAX_CHARS = 1000  # loose: detectors truncate evidence already, and keep their own marker


def _line(text: str) -> str:
    """Untrusted text on one log line: redacted, with line breaks shown rather than obeyed."""
    return redact_text(text, LINE_MAX_CHARS).replace("\r", "\\r").replace("\n", "\\n")


def _who(owner: OwnerRef) -> str:
    return f"{owner.id}{f' ({owner.name})' if owner.name else ''}"


def render_alert(incident: IncidentView) -> str:
    """One line a human can act on: severity, rule, agent, workflow, the named responder and the evidence."""
    evidence = ", ".join(f"{k}={redact_text(v, LINE_MAX_CHARS)!r}" for k, v in incident.evidence.items())
    return (
        f"ALERT [{incident.severity}] incident=#{incident.id} rule={incident.rule} agent={_line(incident.agent_id)} "
        f"workflow={_line(incident.workflow or '(unowned)')} responder={_who(incident.owners.responder)} "
        f"frameworks={','.join(incident.frameworks)} count={incident.count} evidence: {evidence}"
    )


def render_digest(digest: DigestView) -> str:
    """A review digest on one line: how many, per rule and workflow, the top agents and targets, how to list them."""
    rules = "; ".join(f"{_line(r.rule)}@{_line(r.workflow or '(unowned)')} {r.incidents} incident(s) "
                      f"{r.findings} finding(s)" for r in digest.by_rule)
    agents = ", ".join(f"{_line(a)}={n}" for a, n in digest.agents)
    targets = ", ".join(f"{_line(t)}={n}" for t, n in digest.targets)
    ids = " ".join(f"#{i}" for i in digest.incidents[:LISTED]) + (" …" if len(digest.incidents) > LISTED else "")
    waiting = f" ({digest.waiting} more wait for the next digest)" if digest.waiting else ""
    return (f"REVIEW DIGEST #{digest.id} to={_who(digest.responder)}: {len(digest.incidents)} incident(s) kept for "
            f"review{waiting}, {digest.findings} finding(s), {digest.since:%Y-%m-%d %H:%M:%SZ} to "
            f"{digest.until:%Y-%m-%d %H:%M:%SZ} | {rules} | top agents: {agents} | top targets: {targets} | "
            f"incidents: {ids} | list: {digest.list_command}")


def render_group(group: GroupView) -> str:
    """A group's digest refresh on one line: the group, its counts, top agents and targets, the members it names."""
    labels = " ".join(f"{k}={_line(v or '-')}" for k, v in group.labels.items())
    agents = ", ".join(f"{_line(a)}={n}" for a, n in group.agents)
    more = group.more(len(group.agents), group.agents_total)
    named = " ".join(f"#{ln.id}({_line(ln.agent_id)}->{_line(ln.target)})" for ln in group.lines)
    return (f"DIGEST group=#{group.id} [{group.severity}] {labels} to={_who(group.responder)}: {group.members} "
            f"incident(s) joined after #{group.leader_id} paged, {group.findings} finding(s) | top agents: {agents}"
            + (f" and {more} more" if more else "") + f" | new: {named or '-'}"
            + (f" (+{group.unnamed} next)" if group.unnamed else "") + f" | list: {group.list_command}")


def render_approval(notice: ApprovalNotice) -> str:
    """An approval request's notification on one line (the console asks nobody: this is for a dead letter)."""
    a = notice.approval
    return (f"APPROVAL request={_line(a.id)} agent={_line(a.agent_id)} workflow={_line(a.workflow or '(unowned)')} "
            f"to={_who(notice.target)} status={a.status} reason: {_line(a.reason)}")


def render_notice(notice: Outgoing) -> str:
    if isinstance(notice, ApprovalNotice):
        return render_approval(notice)
    if isinstance(notice, DigestNotice):
        return render_digest(notice.digest)
    if isinstance(notice, GroupNotice):
        return render_group(notice.group)
    inc = notice.incident
    if notice.kind is NoticeKind.root:
        return render_alert(inc)
    if notice.kind is NoticeKind.repeat:
        return f"INCIDENT #{inc.id} seen again: count={inc.count} rule={inc.rule} agent={_line(inc.agent_id)}"
    if notice.kind is NoticeKind.escalation:
        note = _line(notice.note or "")
        return f"ESCALATION incident=#{inc.id} to={_who(notice.target)}: {note} | {render_alert(inc)}"
    return f"INCIDENT #{inc.id} {inc.status.value}: {_line(notice.note or '')}"


class ConsoleNotifier:
    """Writes notices to the `warden.alert` log. It keeps no history: the outbox's stored reference is its dedup."""

    name = "console"
    send_bound_s = 1.0  # one log line, written before send returns

    async def send(self, notice: AnyNotice) -> Posted:
        log.warning(render_notice(notice))
        if isinstance(notice, DigestNotice):
            return Posted(address="console", ref=f"digest-{notice.digest.id}")
        if isinstance(notice, GroupNotice):
            return Posted(address="console", ref=f"group-{notice.group.id}-{notice.group.epoch}")
        return Posted(address="console", ref=f"incident-{notice.incident.id}")

    def dead_letter_alert(self, notice: Outgoing, reason: str) -> None:
        """The last resort when a notification could not be delivered: an ERROR line with all it carried."""
        about = (f"approval request {notice.approval.id}" if isinstance(notice, ApprovalNotice)
                 else f"review digest #{notice.digest.id}" if isinstance(notice, DigestNotice)
                 else f"digest of group #{notice.group.id}" if isinstance(notice, GroupNotice)
                 else f"incident #{notice.incident.id}")
        log.error("UNDELIVERED %s notification for %s after retries (%s): %s",
                  notice.kind.value, about, _line(reason), render_notice(notice))

