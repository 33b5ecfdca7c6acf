"""Notification control inside the store's transactions (issue 32): when a page is recorded, inhibition, then
silences, then grouping decide whether it pages (it leads its group), joins its group's digest (a member), or is
muted (recorded, never paged). The rules are `responders/notify_control.py`; this module reads and writes the rows.

A group's digest is delivered through the outbox like any notification: one pending `group` row per group and
notifier at a time (the group row is locked while one is added), claimed under a lease, fenced, and recorded with
the members it named (`digest_lines`); members that joined meanwhile get the next row when it is recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from responders import silences
from responders.db.models import (
    ContainmentStep,
    DigestLine,
    GroupMessage,
    Incident,
    Notification,
    NotifyGroup,
)
from responders.group_digest import LINES_PER_REPLY, GroupLine, GroupView
from responders.incidents import ACTIVE, StepStatus
from responders.notify_control import (
    NotifyPolicy,
    Route,
    first_page_at,
    group_key,
    joins_group,
    labels_of,
    outranks,
    reannounce,
)
from responders.store.notices import NoticeKind, Posted
from warden.contract.findings import FindingOwners, OwnerRef

if TYPE_CHECKING:
    from responders.store.timeline import Timeline

LEADER, MEMBER = "leader", "member"
QUARANTINE, RELEASE = "quarantine_agent", "release"
INHIBIT_CANDIDATES = 200  # open incidents looked at per inhibit rule and page (the newest first)


@dataclass(frozen=True)
class Verdict:
    """What notification control decided for a page: `leader` (it pages, its root due at `at`), `member` (its
    group's digest carries it), `silenced` or `inhibited` (recorded, nobody paged)."""

    kind: str
    at: datetime | None = None
    by: int | None = None

    @property
    def muted(self) -> bool:
        return self.kind in ("silenced", "inhibited")


def responder_of(incident: Incident) -> OwnerRef:
    return FindingOwners.model_validate(incident.owners).responder


def incident_labels(incident: Incident, *, quarantined: bool = False) -> dict[str, str]:
    return labels_of(workflow=incident.workflow, rule=incident.rule, severity=incident.severity,
                     agent=incident.agent_id, target=incident.target, responder=responder_of(incident).id,
                     tier=incident.tier, quarantined=quarantined)


async def quarantined(s: AsyncSession, incident_ids: Sequence[int]) -> set[int]:
    """Of these incidents, those whose containment quarantined their agent and did not release it."""
    if not incident_ids:
        return set()
    rows = (await s.execute(select(ContainmentStep.incident_id, ContainmentStep.action).where(
        ContainmentStep.incident_id.in_(list(incident_ids)), ContainmentStep.status == StepStatus.done.value,
        ContainmentStep.action.in_([QUARANTINE, RELEASE])))).all()
    done: dict[int, set[str]] = {}
    for incident_id, action in rows:
        done.setdefault(incident_id, set()).add(action)
    return {i for i, actions in done.items() if QUARANTINE in actions and RELEASE not in actions}


_COLUMNS = {"workflow": Incident.workflow, "rule": Incident.rule, "severity": Incident.severity,
            "agent": Incident.agent_id, "target": Incident.target, "tier": Incident.tier}


async def inhibitor(s: AsyncSession, policy: NotifyPolicy, incident: Incident,
                    labels: Mapping[str, str]) -> tuple[int, int] | None:
    """(source incident id, rule index) of an open incident that inhibits this page, or None. Candidates share
    the rule's `equal` labels (filtered in SQL where a column holds them), newest first."""
    for rule in policy.inhibitions:
        if not rule.targets(labels):
            continue
        query = select(Incident).where(Incident.status.in_([st.value for st in ACTIVE]), Incident.id != incident.id)
        for label in rule.equal:
            column = _COLUMNS.get(label)
            if column is not None:
                value = labels.get(label, "")
                query = query.where(column.is_(None) if label == "workflow" and not value else column == value)
        candidates = list((await s.execute(query.order_by(Incident.id.desc()).limit(INHIBIT_CANDIDATES))).scalars())
        # Whether an agent is quarantined is one more query: asked only of the candidates every other matcher takes.
        likely = [c for c in candidates if rule.inhibits_but_quarantine(incident_labels(c), labels)]
        held = await quarantined(s, [c.id for c in likely]) if rule.reads_quarantine else set()
        for source in likely:
            if rule.inhibits(incident_labels(source, quarantined=source.id in held), labels):
                return source.id, rule.index
    return None


async def decide(timeline: Timeline, s: AsyncSession, incident: Incident, now: datetime, *, policy: NotifyPolicy,
                 notifiers: Sequence[str]) -> Verdict:
    """Inhibition, silences, grouping, for a page being announced (opened as one, raised to one, or the first
    repeat after what muted it ended): the incident row says what was decided, its timeline says why."""
    muted = await mute(timeline, s, incident, now, policy=policy)
    if muted is not None:
        return muted
    return await _group(timeline, s, incident, route=policy.route_for(incident.workflow),
                        labels=incident_labels(incident), now=now, notifiers=notifiers)


async def mute(timeline: Timeline, s: AsyncSession, incident: Incident, now: datetime, *,
               policy: NotifyPolicy) -> Verdict | None:
    """Inhibition, then silences, for a page or a repeat of one: the verdict when muted (marked on the row; on the
    timeline when it changes), else None (a mark that ended is cleared, and the timeline says so)."""
    labels = incident_labels(incident)
    inhibited = await inhibitor(s, policy, incident, labels)
    if inhibited is not None:
        source, rule = inhibited
        if incident.inhibited_by != source:
            await timeline.log_entry(s, incident.id, now, "inhibited", detail={
                "by_incident": source, **policy.inhibitions[rule].as_json()})
        incident.inhibited_by, incident.silenced_by = source, None
        return Verdict("inhibited", by=source)
    silence = await silences.matching(s, labels, now)
    if silence is not None:
        if incident.silenced_by != silence.id:
            await timeline.log_entry(s, incident.id, now, "silenced", detail={
                "silence": silence.id, "matchers": list(silence.matchers), "ends_at": silence.ends_at.isoformat(),
                "author": silence.author, "comment": silence.comment})
        incident.silenced_by, incident.inhibited_by = silence.id, None
        return Verdict("silenced", by=silence.id)
    if incident.silenced_by is not None or incident.inhibited_by is not None:
        await timeline.log_entry(s, incident.id, now, "unmuted", detail={
            "silence": incident.silenced_by, "inhibited_by": incident.inhibited_by,
            "why": "the silence ended" if incident.silenced_by is not None else "the inhibiting incident closed"})
    incident.silenced_by = incident.inhibited_by = None
    return None


async def _group(timeline: Timeline, s: AsyncSession, incident: Incident, *, route: Route,
                 labels: Mapping[str, str], now: datetime, notifiers: Sequence[str]) -> Verdict:
    responder = responder_of(incident)
    key, values = group_key(responder.id, route.group_by, labels)
    for _ in range(2):  # a second pass when another worker opened the group at the same instant
        group = (await s.execute(select(NotifyGroup).where(NotifyGroup.open_key == key).with_for_update())
                 ).scalar_one_or_none()
        interval = float(group.route.get("interval_s", route.interval_s)) if group is not None else route.interval_s
        live = group is not None and joins_group(last_at=group.last_at, now=now, interval_s=interval)
        if group is not None and live and not outranks(incident.severity, group.severity):
            group.last_at, group.members = max(group.last_at, now), group.members + 1
            incident.group_id, incident.group_role = group.id, MEMBER
            await timeline.log_entry(s, incident.id, now, "grouped_into_digest", detail={
                "group": group.id, "leader": group.leader_id, "labels": dict(group.labels),
                "why": f"a page of this group came within {interval:g}s"})
            await refresh(s, group, now, notifiers)
            return Verdict(MEMBER, by=group.id)
        if group is not None and live:  # a higher severity is never merged down: it pages and leads from now
            group.severity, group.leader_id, group.last_at = incident.severity, incident.id, max(group.last_at, now)
            group.leaders += 1
            incident.group_id, incident.group_role = group.id, LEADER
            await timeline.log_entry(s, incident.id, now, "group_led", detail={
                "group": group.id, "labels": dict(group.labels), "why": "higher severity than the group's pages"})
            await refresh(s, group, now, notifiers)
            return Verdict(LEADER, at=now, by=group.id)
        if group is not None:  # quiet for a whole interval: over; this page opens the next group
            group.open_key = None
            await s.flush()
        try:
            async with s.begin_nested():
                group = NotifyGroup(key=key, open_key=key, responder=responder.id,
                                    target=responder.model_dump(mode="json"), labels=values, route=route.as_json(),
                                    severity=incident.severity, leader_id=incident.id, opened_at=now, last_at=now,
                                    members=0, leaders=1)
                s.add(group)
        except IntegrityError:  # another worker opened it meanwhile: join it instead
            continue
        # It pages as any incident does (its timeline says `notified` when the root is out); the row names the group
        # it leads, which the API shows.
        incident.group_id, incident.group_role = group.id, LEADER
        return Verdict(LEADER, at=first_page_at(now=now, severity=incident.severity, wait_s=route.wait_s),
                       by=group.id)
    raise RuntimeError(f"group {key[:12]} was opened and closed concurrently twice")  # pragma: no cover


async def refresh(s: AsyncSession, group: NotifyGroup, now: datetime, notifiers: Sequence[str]) -> None:
    """Ask each notifier for a refresh of the group's digest, unless one is pending already (it renders what the
    group holds when it is sent). The caller holds the group row locked."""
    if group.members == 0:
        return  # no member yet: the leader's root says it all
    pending = set((await s.execute(select(Notification.notifier).where(
        Notification.group_id == group.id, Notification.status == "pending"))).scalars())
    for name in notifiers:
        if name not in pending:
            s.add(Notification(incident_id=None, group_id=group.id, notifier=name, kind=NoticeKind.group.value,
                               target=dict(group.target), note=None, status="pending", attempts=0,
                               next_attempt_at=now, created_at=now))


async def refresh_by_id(s: AsyncSession, group_id: int, now: datetime, notifiers: Sequence[str]) -> None:
    group = (await s.execute(select(NotifyGroup).where(NotifyGroup.id == group_id).with_for_update())
             ).scalar_one_or_none()
    if group is not None:
        await refresh(s, group, now, notifiers)


# -- the outbox side: claiming and recording a group's digest --------------------------------------------------


async def peek(s: AsyncSession, group: NotifyGroup, notifier: str, now: datetime,
               api_url: str | None) -> tuple[GroupView, Posted | None]:
    """A refresh of the group's digest as far as the budget needs it (two queries): the message to update (None:
    post one) and the members it would name; `complete` adds the counts once the refresh is claimed."""
    named = select(DigestLine.incident_id).where(DigestLine.group_id == group.id, DigestLine.notifier == notifier)
    unnamed = (select(Incident).where(Incident.group_id == group.id, Incident.group_role == MEMBER,
                                      Incident.id.not_in(named)).order_by(Incident.id))
    rows = list((await s.execute(unnamed.limit(LINES_PER_REPLY))).scalars())
    last = (await s.execute(select(GroupMessage).where(
        GroupMessage.group_id == group.id, GroupMessage.notifier == notifier)
        .order_by(GroupMessage.epoch.desc()).limit(1))).scalar_one_or_none()
    repeat_s = float(group.route.get("repeat_s", 14400.0))
    if last is not None and not reannounce(posted_at=last.at, now=now, repeat_s=repeat_s):
        root, epoch = Posted(last.address, last.ref), last.epoch
    else:
        root, epoch = None, (last.epoch + 1 if last is not None else 1)
    return GroupView(
        id=group.id, key=group.key, epoch=epoch, labels={str(k): str(v) for k, v in dict(group.labels).items()},
        severity=group.severity, responder=OwnerRef.model_validate(group.target), leader_id=group.leader_id,
        leaders=group.leaders, members=group.members, findings=0, opened_at=group.opened_at,
        last_at=group.last_at, agents=(), agents_total=0, targets=(), targets_total=0,
        lines=tuple(GroupLine(r.id, r.agent_id, r.target, r.severity, r.count) for r in rows), api_url=api_url,
    ), root


async def complete(s: AsyncSession, view: GroupView, notifier: str, top: int) -> GroupView:
    """The counts a claimed refresh shows: findings, the agents and targets seen most (and how many in all), and how
    many members its reply leaves for the next one."""
    of_group = (Incident.group_id == view.id) & (Incident.group_role == MEMBER)
    findings = (await s.execute(select(func.coalesce(func.sum(Incident.count), 0)).where(of_group))).scalar_one()

    async def ranked(column: Any) -> tuple[tuple[tuple[str, int], ...], int]:
        rows = (await s.execute(select(column, func.sum(Incident.count)).where(of_group).group_by(column)
                                .order_by(func.sum(Incident.count).desc(), column).limit(top))).all()
        total = (await s.execute(select(func.count(func.distinct(column))).where(of_group))).scalar_one()
        return tuple((str(v), int(n)) for v, n in rows), int(total)

    agents, agents_total = await ranked(Incident.agent_id)
    targets, targets_total = await ranked(Incident.target)
    named = select(DigestLine.incident_id).where(DigestLine.group_id == view.id, DigestLine.notifier == notifier)
    unnamed = (await s.execute(select(func.count()).select_from(Incident).where(
        of_group, Incident.id.not_in(named)))).scalar_one()
    return replace(view, findings=int(findings), agents=agents, agents_total=agents_total, targets=targets,
                   targets_total=targets_total, unnamed=max(0, int(unnamed) - len(view.lines)))


async def recorded(timeline: Timeline, s: AsyncSession, *, dialect: str, group_id: int, notifier: str, epoch: int,
                   lines: Sequence[GroupLine], posted: Posted, target: OwnerRef, now: datetime) -> None:
    """The refresh went out (the claim's fence held): its message becomes the group's for this epoch (the first one
    recorded stays), each member it named says so on its timeline, and members still unnamed get the next refresh."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await s.execute(insert(GroupMessage).values(
        group_id=group_id, notifier=notifier, epoch=epoch, address=posted.address, ref=posted.ref, at=now,
    ).on_conflict_do_nothing(index_elements=["group_id", "notifier", "epoch"]))
    for line in sorted(lines, key=lambda ln: ln.id):  # one lock order for every writer of many incidents
        added = await s.execute(insert(DigestLine).values(
            incident_id=line.id, group_id=group_id, notifier=notifier, address=posted.address, ref=posted.ref,
            at=now).on_conflict_do_nothing(index_elements=["incident_id", "notifier"]))
        if getattr(added, "rowcount", 1) == 0:
            continue  # named by an earlier delivery already
        await timeline.log_entry(s, line.id, now, "notified", detail={
            "kind": NoticeKind.group.value, "to": target.id, "via": notifier, "group": group_id, "digest_epoch": epoch,
            "address": posted.address, "ref": posted.ref})
    group = (await s.execute(select(NotifyGroup).where(NotifyGroup.id == group_id).with_for_update())
             ).scalar_one()
    named = select(DigestLine.incident_id).where(DigestLine.group_id == group_id, DigestLine.notifier == notifier)
    waiting = (await s.execute(select(func.count()).select_from(Incident).where(
        Incident.group_id == group_id, Incident.group_role == MEMBER, Incident.id.not_in(named)))).scalar_one()
    if waiting:
        pending = (await s.execute(select(func.count()).select_from(Notification).where(
            Notification.group_id == group_id, Notification.notifier == notifier,
            Notification.status == "pending"))).scalar_one()
        if not pending:
            s.add(Notification(incident_id=None, group_id=group.id, notifier=notifier, kind=NoticeKind.group.value,
                               target=dict(group.target), note=None, status="pending", attempts=0,
                               next_attempt_at=now, created_at=now))

