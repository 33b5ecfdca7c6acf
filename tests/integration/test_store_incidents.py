"""The incidents room: a finding opens an incident or groups into the active one (by tier: paged, kept for review,
logged, raised), people move its lifecycle, and the counts and silence matchers read it back."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from responders.db.models import ContainmentStep, FindingRecord, Incident
from responders.incidents import Status, escalation_note, incident_key
from responders.silences import Silences
from responders.store.incidents import Incidents, Recorded
from responders.store.notices import NoticeKind, Posted
from responders.store.rooms import Store
from tests.support.incident_helpers import ONE_GROUP_PER_INCIDENT, finding
from tests.support.store_rooms import T0, incident_row, notifications, rooms_on
from warden.contract.actors import Actor
from warden.contract.findings import EscalationRef, Finding, OwnerRef
from warden.contract.matrix import Severity, Tier

FINANCE_OPS = OwnerRef(id="finance-ops")
KAI = Actor("slack", "U0KAI")
LEASE = timedelta(seconds=30)
ROOT = Posted("C0FINOPS", "1700000000.000001")


def tiered(tier: Tier, agent: str = "billing-agent-1", tool: str = "shell.exec", *, ts: datetime = T0,
           evidence: dict[str, str] | None = None) -> Finding:
    return finding(agent, tool, ts=ts, evidence=evidence).model_copy(update={"tier": tier})


async def records(store: Store) -> list[FindingRecord]:
    async with store.sessions() as s:
        return list((await s.execute(select(FindingRecord).order_by(FindingRecord.recorded_at))).scalars())


async def kinds(store: Store, incident_id: int) -> list[str]:
    return [e.kind for e in await store.timeline.entries(incident_id)]


async def silence(store: Store, matchers: list[str], starts_at: datetime, ends_at: datetime) -> int:
    made = await Silences(store.engine).add(matchers, starts_at=starts_at, ends_at=ends_at, comment="maintenance",
                                            author="kai", identity="U0KAI", now=starts_at)
    return made.id


async def test_a_page_opens_an_incident_with_the_finding_s_fields_its_root_and_its_escalation(
    incident_db: str,
) -> None:
    f = finding("billing-agent-1", ts=T0 - timedelta(seconds=5), evidence={"tool": "shell.exec", "cmd": "id"})
    control: list[str] = []
    async with rooms_on(incident_db) as store:
        assert await store.incidents.record_finding(f, T0, control) is Recorded.opened
        row = await incident_row(store, 1)
        [record] = await records(store)
        [root] = await notifications(store)
        entries = await store.timeline.entries(1)
    assert control == ["leader"]
    key = incident_key("unapproved_tool", "billing-agent-1", "shell.exec")
    assert (row.key, row.open_key, row.status, row.rule, row.severity, row.title) == (
        key, key, "open", "unapproved_tool", "high", f.title)
    assert (row.agent_id, row.workflow, row.target, row.frameworks, row.tags) == (
        "billing-agent-1", "billing-agent", "shell.exec", list(f.frameworks), list(f.tags))
    assert row.evidence == {"tool": "shell.exec", "cmd": "id"} and row.policy_sha256 == f.policy_sha256
    assert row.owners == f.owners.model_dump(mode="json")
    assert (row.count, row.first_seen, row.last_seen, row.opened_at, row.updated_at) == (
        1, f.ts, f.ts, T0, T0)
    assert (row.tier, row.review_pending_since, row.escalation_step) == ("page", None, 0)
    assert row.escalate_at == T0 + timedelta(minutes=10), "finance-ops' step of the chain times out in 10 m"
    assert (record.finding_id, record.incident_id, record.rule, record.agent_id, record.event_id) == (
        f.finding_id, 1, "unapproved_tool", "billing-agent-1", f.event_id)
    assert (record.severity, record.shadow, record.ts, record.evidence, record.recorded_at) == (
        "high", False, f.ts, {"tool": "shell.exec", "cmd": "id"}, T0)
    assert (root.kind, root.notifier, root.target["id"], root.next_attempt_at) == ("root", "slack", "finance-ops", T0)
    assert entries[0].kind == "opened" and entries[0].detail == {
        "finding_id": f.finding_id, "tier": "page", "responder": "finance-ops", "approver": "sam",
        "escalation": ["finance-ops", "secops", "ciso"], "policy_sha256": f.policy_sha256}


async def test_a_finding_handled_before_is_a_duplicate_and_changes_nothing(incident_db: str) -> None:
    f = finding("billing-agent-1", ts=T0)
    async with rooms_on(incident_db) as store:
        assert await store.incidents.record_finding(f, T0) is Recorded.opened
        before = (await notifications(store), await kinds(store, 1))
        assert await store.incidents.record_finding(f, T0 + timedelta(seconds=1)) is Recorded.duplicate
        row = await incident_row(store, 1)
        [record] = await records(store)
        after = (await notifications(store), await kinds(store, 1))
    assert (row.count, row.updated_at, record.recorded_at) == (1, T0, T0)
    assert [n.id for n in after[0]] == [n.id for n in before[0]] and after[1] == before[1]


async def test_a_shadow_finding_is_recorded_and_opens_nothing(incident_db: str) -> None:
    f = finding("billing-agent-1", ts=T0, shadow=True)
    async with rooms_on(incident_db) as store:
        assert await store.incidents.record_finding(f, T0) is Recorded.shadow
        assert await store.incidents.record_finding(f, T0) is Recorded.duplicate, "recorded: its id is known"
        [record] = await records(store)
        assert await store.incidents.incident(1) is None
        assert await notifications(store) == []
    assert (record.finding_id, record.shadow, record.incident_id) == (f.finding_id, True, None)


async def test_a_repeat_within_the_window_groups_and_tells_the_thread_once_while_unsent(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        second = finding("billing-agent-1", ts=T0 + timedelta(minutes=59), evidence={"tool": "shell.exec", "n": "2"})
        assert await store.incidents.record_finding(second, T0 + timedelta(minutes=60)) is Recorded.grouped
        late = finding("billing-agent-1", ts=T0 + timedelta(minutes=30), evidence={"tool": "shell.exec", "n": "3"})
        assert await store.incidents.record_finding(late, T0 + timedelta(minutes=61)) is Recorded.grouped
        row = await incident_row(store, 1)
        repeats = [n for n in await notifications(store) if n.kind == "repeat"]
        grouped = [e.detail for e in await store.timeline.entries(1) if e.kind == "grouped"]
        recorded = await records(store)
    assert (row.count, row.first_seen, row.last_seen) == (3, T0, T0 + timedelta(minutes=59)), "the latest repeat"
    assert row.evidence == {"tool": "shell.exec", "n": "3"} and row.updated_at == T0 + timedelta(minutes=61)
    assert [(n.notifier, n.status) for n in repeats] == [("slack", "pending")], "one unsent repeat per notifier"
    assert grouped == [{"finding_id": second.finding_id, "count": 2, "tier": "page"},
                       {"finding_id": late.finding_id, "count": 3, "tier": "page"}]
    assert [r.incident_id for r in recorded] == [1, 1, 1]


async def test_a_repeat_whose_notice_is_claimed_or_sent_adds_a_new_one(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        [root] = await store.outbox.claim_due(T0, LEASE)
        assert await store.claims.mark_delivered(root, ROOT, T0)
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0 + timedelta(seconds=1))
        [claimed] = await store.outbox.claim_due(T0 + timedelta(seconds=1), LEASE)
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0 + timedelta(seconds=2))
        repeats = [(n.id, n.claim is None) for n in await notifications(store) if n.kind == "repeat"]
    assert claimed.kind is NoticeKind.repeat
    assert [unclaimed for _, unclaimed in repeats] == [False, True], "a claimed row may have read the old count"


async def test_a_repeat_tells_every_notifier_that_has_no_unsent_repeat(incident_db: str) -> None:
    async with rooms_on(incident_db, ["slack", "console"]) as store:
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        repeats = sorted(n.notifier or "" for n in await notifications(store) if n.kind == "repeat")
    assert repeats == ["console", "slack"]


async def test_a_repeat_after_the_window_supersedes_the_incident_with_a_fresh_one(incident_db: str) -> None:
    window = timedelta(seconds=finding("billing-agent-1").group_window_s)
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        assert await store.incidents.record_finding(finding("billing-agent-1", ts=T0 + window), T0 + window) \
            is Recorded.grouped, "at the window's edge it still joins"
        later = T0 + 2 * window + timedelta(seconds=1)
        assert await store.incidents.record_finding(finding("billing-agent-1", ts=later), later) is Recorded.opened
        old, new = await incident_row(store, 1), await incident_row(store, 2)
        [superseded] = [e for e in await store.timeline.entries(1) if e.kind == "superseded"]
        assert await store.incidents.record_finding(finding("billing-agent-1", ts=later), later) is Recorded.grouped
        counts = ((await incident_row(store, 1)).count, (await incident_row(store, 2)).count)
    assert (old.open_key, old.status, new.open_key) == (None, "open", new.key)
    assert old.key == new.key
    assert superseded.detail == {"by_incident": 2}
    assert counts == (2, 2), "the next repeat joins the fresh incident"


async def test_a_closed_incident_is_not_grouped_into_and_not_superseded(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        assert await store.incidents.transition(1, Status.open, Status.false_positive, owner=FINANCE_OPS, by=KAI,
                                                note="benign", now=T0)
        assert await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0) is Recorded.opened
        assert "superseded" not in await kinds(store, 1)
        assert (await incident_row(store, 1)).count == 1


async def test_review_and_log_findings_tell_nobody_and_say_so_on_the_timeline(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        review = tiered(Tier.review)
        held = tiered(Tier.hold, tool="net.fetch")
        logged = tiered(Tier.log, tool="net.scan")
        for f in (review, held, logged):
            assert await store.incidents.record_finding(f, T0 + timedelta(seconds=1)) is Recorded.opened
        rows = [await incident_row(store, i) for i in (1, 2, 3)]
        entries = [await store.timeline.entries(i) for i in (1, 2, 3)]
        assert await notifications(store) == []
    assert [(r.tier, r.review_pending_since, r.escalate_at, r.group_id) for r in rows] == [
        ("review", T0 + timedelta(seconds=1), None, None), ("review", T0 + timedelta(seconds=1), None, None),
        ("log", None, None, None)]
    assert [e.kind for e in entries[0]] == ["opened", "kept_for_review"]
    assert entries[0][0].detail["tier"] == "review" and entries[1][0].detail["tier"] == "review"
    assert entries[0][1].detail == {"finding_id": review.finding_id, "digest_to": "finance-ops"}
    assert entries[1][1].detail == {"finding_id": held.finding_id, "digest_to": "finance-ops"}
    assert [(e.kind, e.detail) for e in entries[2]][1:] == [("logged", {"finding_id": logged.finding_id})]


async def test_a_page_joining_a_review_incident_raises_it_and_pages_it(incident_db: str) -> None:
    later = T0 + timedelta(minutes=3)
    control: list[str] = []
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(tiered(Tier.review), T0)
        page = tiered(Tier.page, ts=later)
        assert await store.incidents.record_finding(page, later, control) is Recorded.promoted
        row = await incident_row(store, 1)
        entries = await store.timeline.entries(1)
        [root] = await notifications(store)
        view = await store.incidents.incident(1)
    assert control == ["leader"]
    assert (row.tier, row.review_pending_since, row.count, row.escalation_step) == ("page", None, 2, 0)
    assert row.escalate_at == later + timedelta(minutes=10)
    [raised] = [e for e in entries if e.kind == "tier_raised"]
    assert raised.detail == {"finding_id": page.finding_id, "from": "review", "to": "page"}
    assert (root.kind, root.target["id"], root.next_attempt_at) == ("root", "finance-ops", later)
    assert view is not None and view.group_role == "leader" and view.group_id is not None


async def test_a_review_finding_raises_a_log_incident_and_waits_for_the_digest(incident_db: str) -> None:
    later = T0 + timedelta(minutes=3)
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(tiered(Tier.log), T0)
        assert await store.incidents.record_finding(tiered(Tier.log), T0) is Recorded.grouped
        assert await store.incidents.record_finding(tiered(Tier.hold), later) is Recorded.promoted
        assert await store.incidents.record_finding(tiered(Tier.log), later) is Recorded.grouped, "never lowered"
        row = await incident_row(store, 1)
        [raised] = [e.detail for e in await store.timeline.entries(1) if e.kind == "tier_raised"]
        assert await notifications(store) == []
    assert (row.tier, row.review_pending_since, row.count, row.escalate_at) == ("review", later, 4, None)
    assert (raised["from"], raised["to"]) == ("log", "review")


async def test_a_review_repeat_after_the_digest_waits_for_the_next_one(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(tiered(Tier.review), T0)
        assert await store.incidents.record_finding(tiered(Tier.review), T0 + timedelta(minutes=1)) \
            is Recorded.grouped
        pending_kept = (await incident_row(store, 1)).review_pending_since
        async with store.sessions.begin() as s:  # a digest took it
            await s.execute(update(Incident).values(review_pending_since=None))
        assert await store.incidents.record_finding(tiered(Tier.log), T0 + timedelta(minutes=2)) is Recorded.grouped
        after_log = (await incident_row(store, 1)).review_pending_since
        assert await store.incidents.record_finding(tiered(Tier.review), T0 + timedelta(minutes=3)) \
            is Recorded.grouped
        row = await incident_row(store, 1)
    assert pending_kept == T0, "already waiting for the next digest: the first one stays"
    assert after_log is None, "a log repeat is not reviewed"
    assert (row.review_pending_since, row.tier, row.count) == (T0 + timedelta(minutes=3), "review", 4)


async def test_a_lower_repeat_of_a_page_is_announced_in_its_thread(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(tiered(Tier.page), T0)
        assert await store.incidents.record_finding(tiered(Tier.review), T0) is Recorded.grouped
        row = await incident_row(store, 1)
        [grouped] = [e.detail for e in await store.timeline.entries(1) if e.kind == "grouped"]
        sent = [n.kind for n in await notifications(store)]
    assert (row.tier, row.review_pending_since) == ("page", None)
    assert grouped["tier"] == "review" and sent == ["root", "repeat"]


async def test_the_first_step_of_the_chain_is_asked_with_the_root_when_it_is_not_the_responder(
    incident_db: str,
) -> None:
    f = finding("billing-agent-1", ts=T0)
    chain = [EscalationRef(owner=OwnerRef(id="secops"), ack_timeout=timedelta(minutes=7)), *f.owners.escalation]
    owners = f.owners.model_copy(update={"escalation": chain, "approver": None})
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(f.model_copy(update={"owners": owners}), T0)
        sent = [(n.kind, n.target["id"], n.note) for n in await notifications(store)]
        row = await incident_row(store, 1)
        [opened] = [e.detail for e in await store.timeline.entries(1) if e.kind == "opened"]
    assert sent == [("root", "finance-ops", None), ("escalation", "secops", escalation_note(owners, 0))]
    assert row.escalate_at == T0 + timedelta(minutes=7)
    assert opened["approver"] is None and opened["escalation"][0] == "secops"


async def test_a_page_with_no_chain_asks_nobody_more_and_never_escalates(incident_db: str) -> None:
    f = finding("billing-agent-1", ts=T0)
    owners = f.owners.model_copy(update={"escalation": []})
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(f.model_copy(update={"owners": owners}), T0)
        sent = [n.kind for n in await notifications(store)]
        row = await incident_row(store, 1)
    assert sent == ["root"] and row.escalate_at is None


async def test_a_group_wait_delays_the_root_and_a_second_page_of_the_group_joins_its_digest(
    incident_db: str,
) -> None:
    notifications_policy = ONE_GROUP_PER_INCIDENT.notifications.model_copy(update={
        "group_by": ["workflow", "rule"], "group_wait": timedelta(seconds=30)})
    matrix = ONE_GROUP_PER_INCIDENT.model_copy(update={"notifications": notifications_policy})
    control: list[str] = []
    async with rooms_on(incident_db) as store:
        incidents = Incidents(store.engine, store.timeline, store.outbox, store.decisions,
                              live_matrix=lambda: ("grouped", matrix))
        await incidents.record_finding(finding("billing-agent-1", "tool.a", ts=T0), T0, control)
        await incidents.record_finding(finding("billing-agent-1", "tool.b", ts=T0), T0, control)
        leader, member = await incident_row(store, 1), await incident_row(store, 2)
        sent = [(n.incident_id, n.kind, n.next_attempt_at) for n in await notifications(store)
                if n.incident_id is not None]
    assert control == ["leader", "member"]
    assert sent == [(1, "root", T0 + timedelta(seconds=30))]
    assert (leader.group_role, member.group_role, member.group_id) == ("leader", "member", leader.group_id)
    assert (leader.escalate_at, member.escalate_at) == (T0 + timedelta(minutes=10), None)


async def test_a_page_made_while_silenced_is_announced_by_its_first_repeat_after_the_silence(
    incident_db: str,
) -> None:
    control: list[str] = []
    async with rooms_on(incident_db) as store:
        await silence(store, ['agent="billing-agent-1"'], T0, T0 + timedelta(minutes=5))
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0, control)
        muted = await incident_row(store, 1)
        assert await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0 + timedelta(minutes=1),
                                                    control) is Recorded.grouped
        assert await notifications(store) == [], "silenced: nobody is told"
        after = T0 + timedelta(minutes=6)
        assert await store.incidents.record_finding(finding("billing-agent-1", ts=after), after, control) \
            is Recorded.grouped
        row = await incident_row(store, 1)
        sent = [(n.kind, n.next_attempt_at) for n in await notifications(store)]
        timeline = await kinds(store, 1)
    assert control == ["silenced", "leader"], "a muted repeat decides nothing; the first one after it pages"
    assert (muted.silenced_by, muted.group_role, muted.escalate_at) == (1, None, None)
    assert (row.silenced_by, row.group_role, row.escalate_at) == (None, "leader", after + timedelta(minutes=10))
    assert sent == [("root", after)], "announced now: its root, no repeat in a thread that does not exist"
    assert timeline.count("silenced") == 1 and timeline.count("unmuted") == 1


async def test_a_silence_made_after_the_page_mutes_its_repeats(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        await silence(store, ['rule="unapproved_tool"'], T0, T0 + timedelta(minutes=5))
        assert await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0 + timedelta(minutes=1)) \
            is Recorded.grouped
        muted = [n.kind for n in await notifications(store)]
        after = T0 + timedelta(minutes=6)
        await store.incidents.record_finding(finding("billing-agent-1", ts=after), after)
        sent = [n.kind for n in await notifications(store)]
        row = await incident_row(store, 1)
    assert muted == ["root"] and sent == ["root", "repeat"], "announced before: the silence ended, the thread hears"
    assert (row.silenced_by, row.group_role, row.count) == (None, "leader", 3)


async def quarantined(store: Store, incident_id: int) -> None:
    """The incident's containment quarantined its agent: a done `quarantine_agent` step, as the ledger leaves it."""
    async with store.sessions.begin() as s:
        s.add(ContainmentStep(incident_id=incident_id, playbook="quarantine", step=0, action="quarantine_agent",
                              params={}, gate="auto", on_failure="stop", dry_run=False, approval_timeout_s=0.0,
                              status="done", next_attempt_at=T0, detail={}, finding_ts=T0, created_at=T0,
                              updated_at=T0))


async def test_a_page_inhibited_by_a_quarantined_critical_incident_tells_nobody(incident_db: str) -> None:
    critical = finding("billing-agent-1", "tool.a", ts=T0).model_copy(update={"severity": Severity.critical})
    control: list[str] = []
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(critical, T0)
        await quarantined(store, 1)  # its containment quarantined the agent
        before = len(await notifications(store))
        await store.incidents.record_finding(finding("billing-agent-1", "tool.b", ts=T0), T0, control)
        await store.incidents.record_finding(finding("billing-agent-1", "tool.b", ts=T0), T0, control)
        row = await incident_row(store, 2)
        after = await notifications(store)
    assert control == ["inhibited"]
    assert (row.inhibited_by, row.group_role, row.escalate_at, row.count) == (1, None, None, 2)
    assert len(after) == before, "neither the page nor its repeat tells anyone"


async def test_an_inhibited_page_is_announced_by_its_first_repeat_after_the_inhibiting_incident_closed(
    incident_db: str,
) -> None:
    critical = finding("billing-agent-1", "tool.a", ts=T0).model_copy(update={"severity": Severity.critical})
    later = T0 + timedelta(minutes=1)
    control: list[str] = []
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(critical, T0)
        await quarantined(store, 1)  # its containment quarantined the agent
        await store.incidents.record_finding(finding("billing-agent-1", "tool.b", ts=T0), T0, control)
        assert await store.incidents.transition(1, Status.open, Status.false_positive, owner=FINANCE_OPS, by=KAI,
                                                note="a drill", now=later)
        assert await store.incidents.record_finding(finding("billing-agent-1", "tool.b", ts=later), later, control) \
            is Recorded.grouped
        row = await incident_row(store, 2)
        sent = [(n.kind, n.next_attempt_at) for n in await notifications(store) if n.incident_id == 2]
        unmuted = [e.detail for e in await store.timeline.entries(2) if e.kind == "unmuted"]
    assert control == ["inhibited", "leader"]
    assert (row.inhibited_by, row.group_role, row.escalate_at) == (None, "leader", later + timedelta(minutes=10))
    assert sent == [("root", later)]
    assert [u["why"] for u in unmuted] == ["the inhibiting incident closed"]


async def test_a_transition_moves_the_lifecycle_once_and_tells_the_responder(incident_db: str) -> None:
    later = T0 + timedelta(minutes=2)
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        key = (await incident_row(store, 1)).key
        assert await store.incidents.transition(1, Status.open, Status.acknowledged, owner=FINANCE_OPS, by=KAI,
                                                note="mine", now=later)
        acked = await incident_row(store, 1)
        assert await store.incidents.transition(1, Status.open, Status.acknowledged, owner=FINANCE_OPS, by=KAI,
                                                note="again", now=later) is False, "moved already: a bool, as typed"
        assert await store.incidents.transition(9, Status.open, Status.acknowledged, owner=FINANCE_OPS, by=KAI,
                                                note="none", now=later) is False
        assert await store.incidents.transition(1, Status.acknowledged, Status.resolved, owner=OwnerRef(id="secops"),
                                                by=Actor("slack", "U0ALEX"), note="fixed", now=later)
        resolved = await incident_row(store, 1)
        moves = [(e.kind, e.actor, e.identity, e.detail) for e in await store.timeline.entries(1)
                 if e.kind in ("acknowledged", "resolved")]
        updates = [(n.note, n.target["id"]) for n in await notifications(store) if n.kind == "update"]
    assert (acked.status, acked.status_by, acked.updated_at, acked.escalate_at, acked.open_key) == (
        "acknowledged", "finance-ops", later, None, key)
    assert (resolved.status, resolved.status_by, resolved.open_key) == ("resolved", "secops", None)
    assert moves == [("acknowledged", "finance-ops", "U0KAI", {"from": "open"}),
                     ("resolved", "secops", "U0ALEX", {"from": "acknowledged"})]
    assert updates == [("mine", "finance-ops"), ("fixed", "finance-ops")]


async def test_incident_reads_the_row_its_decision_and_its_ledger(incident_db: str) -> None:
    f = finding("billing-agent-1", ts=T0)
    async with rooms_on(incident_db) as store:
        assert await store.incidents.incident(1) is None
        await store.incidents.record_finding(f, T0)
        view = await store.incidents.incident(1)
    assert view is not None
    assert (view.id, view.status, view.rule, view.agent_id, view.count, view.owners) == (
        1, Status.open, "unapproved_tool", "billing-agent-1", 1, f.owners)


async def test_silence_matchers_name_the_group_s_labels_else_the_workflow_rule_and_agent(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)  # a page: its own group
        await store.incidents.record_finding(tiered(Tier.review, tool="net.fetch"), T0)  # no group
        await store.incidents.record_finding(tiered(Tier.log, "iam-agent"), T0)  # no group, no workflow
        paged = await store.incidents.silence_matchers(1)
        reviewed = await store.incidents.silence_matchers(2)
        logged = await store.incidents.silence_matchers(3)
        with pytest.raises(LookupError, match="#9 does not exist"):
            await store.incidents.silence_matchers(9)
    assert paged == ['workflow="billing-agent"', 'rule="unapproved_tool"', 'severity="high"',
                     'agent="billing-agent-1"', 'target="shell.exec"']
    assert reviewed == ['workflow="billing-agent"', 'rule="unapproved_tool"', 'agent="billing-agent-1"']
    assert logged == ['workflow=""', 'rule="unapproved_tool"', 'agent="iam-agent"']


async def test_counts_are_of_incidents_updated_and_notifications_delivered_since(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        assert await store.incidents.counts() == {"incidents": 0, "notifications": 0}
        await store.incidents.record_finding(finding("billing-agent-1", ts=T0), T0)
        await store.incidents.record_finding(finding("billing-agent-2", ts=T0), T0 + timedelta(minutes=1))
        [first, _] = await store.outbox.claim_due(T0 + timedelta(minutes=1), LEASE)
        assert await store.claims.mark_delivered(first, ROOT, T0 + timedelta(minutes=2))
        every = await store.incidents.counts()
        at_second = await store.incidents.counts(T0 + timedelta(minutes=1))
        at_delivery = await store.incidents.counts(T0 + timedelta(minutes=2))
        after = await store.incidents.counts(T0 + timedelta(minutes=3))
    assert every == {"incidents": 2, "notifications": 1}
    assert at_second == {"incidents": 1, "notifications": 1}
    assert at_delivery == {"incidents": 0, "notifications": 1}
    assert after == {"incidents": 0, "notifications": 0}
