"""Alert storms (issue 32), groups and digests, on both backends with the local Slack Web API: the first page of a
group pages, the pages that follow within the group interval join one digest per group and channel (updated in
place, each member named in its thread, each member's timeline naming it), interval edges, a severity never merged
down, critical never waiting, the repeat interval, and the digest after a restart and with two workers."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from responders.db.models import Incident, Notification, NotifyGroup
from responders.incident_responder import IncidentResponder
from responders.store.common import utcnow
from responders.trail import Filters
from service.demo.slack_api_server import Message, SlackApiServer
from service.runtime.settings import Settings
from tests.integration.test_incident_cli import acli, api
from tests.support.incident_helpers import POLICY, FakeClock, eventually, finding, running, served
from warden.contract.findings import Finding
from warden.contract.matrix import Matrix, Severity

TOOLS = [f"tool.{i}" for i in range(30)]  # each an out-of-scope tool: one incident per (agent, tool)


def grouped(**notifications: Any) -> Matrix:
    """The bundled matrix with these top-level notification settings (support-assistant uses them)."""
    return POLICY.matrix.model_copy(update={"notifications": POLICY.matrix.notifications.model_copy(
        update=notifications)})


DEFAULTS = grouped()


def digests(slack: SlackApiServer, channel: str = "C0AIPLAT") -> list[Message]:
    return [m for m in slack.roots(channel) if (m.metadata or {}).get("event_type") == "warden_group_digest"]


def roots(slack: SlackApiServer, channel: str = "C0AIPLAT") -> list[Message]:
    return [m for m in slack.roots(channel) if (m.metadata or {}).get("event_type") == "warden_incident"]


def named(slack: SlackApiServer, digest: Message) -> Counter[int]:
    """How often each incident id is named in the digest's thread."""
    return Counter(int(i) for r in slack.replies(digest) for i in re.findall(r"#(\d+) \[", r.text))


async def rows(responder: IncidentResponder, model: Any) -> list[Any]:
    async with responder.store.sessions() as s:
        return list((await s.execute(select(model).order_by(model.id))).scalars())


async def settled(responder: IncidentResponder) -> bool:
    notes = await rows(responder, Notification)
    return bool(notes) and all(n.status == "delivered" for n in notes)


async def drained(responder: IncidentResponder, clock: FakeClock) -> bool:
    """Settled, moving the test's clock a second at a time: the channel budget refills in the outbox's clock."""
    if await settled(responder):
        return True
    clock.advance(seconds=1)
    responder.outbox.wake()
    return False


def page(i: int, clock: FakeClock | None = None, agent: str = "support-bot-1", **kw: Any) -> Finding:
    return finding(agent, TOOLS[i], ts=clock() if clock else None, **kw)


async def test_the_first_page_pages_and_the_rest_join_one_digest_updated_in_place(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    matrix = grouped(digest_top=2)
    async with running(incident_settings, matrix=matrix) as responder:
        await responder.handle(page(0))
        await eventually(lambda: roots(slack_api), what="the leader's root")
        for i in range(1, 6):  # five more incidents of the group (workflow, rule, severity) by two agents
            await responder.handle(page(i, agent=f"support-bot-{1 + i % 2}"))
        await eventually(lambda: settled(responder), what="every notification delivered")
        [digest] = await eventually(lambda: digests(slack_api), what="the digest")
        await eventually(lambda: len(named(slack_api, digest)) == 5, what="five members named")
        for i in range(6, 9):  # three more after the digest is out: the same message, updated
            await responder.handle(page(i, agent="support-bot-2"))
        await eventually(lambda: len(named(slack_api, digest)) == 8, what="eight members named")
        await eventually(lambda: settled(responder), what="every notification delivered")
        incidents = await rows(responder, Incident)
        [group] = await rows(responder, NotifyGroup)
        timelines = {i.id: [e.kind for e in await responder.store.timeline.entries(i.id)] for i in incidents}
        entries = {i.id: await responder.store.timeline.entries(i.id) for i in incidents}
        total, listed = await responder.trail.incidents(Filters(group=group.id))
    leader, *members = incidents
    # the ignore below: Warden posts these with metadata; it is None only on messages sent without any
    assert [r.metadata["event_payload"]["incident_id"] for r in roots(slack_api)] == [leader.id]  # type: ignore[index]
    assert len(digests(slack_api)) == 1 and digest.updates >= 1, "one digest per group and channel, updated"
    assert named(slack_api, digest) == Counter({m.id: 1 for m in members}), "each member named once, in the thread"
    assert (leader.group_role, group.leader_id, group.members) == ("leader", leader.id, 8)
    for m in members:
        assert m.group_role == "member" and m.group_id == group.id and m.escalate_at is None
        assert "grouped_into_digest" in timelines[m.id] and "notified" in timelines[m.id]
        [notified] = [e for e in entries[m.id] if e.kind == "notified"]
        assert notified.detail["group"] == group.id and notified.detail["ref"] == digest.ts
    blocks = str(digest.blocks)
    assert f"*8* incident(s) joined after incident #{leader.id} paged" in blocks
    assert "_and 6 more_" in blocks, "two of the eight targets are named, then how many more"
    assert f"GET /incidents?group={group.id}" in blocks and "Silence 1 h" in blocks
    assert total == 9 and {i["id"] for i in listed} == {i.id for i in incidents}
    assert len(slack_api.calls("chat.update")) == digest.updates


async def test_the_group_interval_edges_and_a_quiet_interval_opens_a_new_group(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    async with running(incident_settings, clock=clock, matrix=grouped(group_interval=timedelta(minutes=5))) as r:
        await r.handle(page(0, clock))
        clock.advance(minutes=5)  # exactly the interval after the leader: joins (the edge is inside)
        await r.handle(page(1, clock))
        clock.advance(minutes=5, seconds=1)  # just past the interval after the last member: the group is over
        await r.handle(page(2, clock))
        clock.advance(seconds=1)
        await r.handle(page(3, clock))
        incidents = await rows(r, Incident)
        groups = await rows(r, NotifyGroup)
    assert [(i.group_role, i.group_id) for i in incidents] == [
        ("leader", groups[0].id), ("member", groups[0].id), ("leader", groups[1].id), ("member", groups[1].id)]
    assert groups[0].open_key is None and groups[1].open_key == groups[1].key, "one open group per key"


async def test_a_higher_severity_is_never_merged_down_and_critical_never_waits(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    matrix = grouped(group_by=["workflow", "rule"], group_wait=timedelta(seconds=30))
    async with running(incident_settings, clock=clock, matrix=matrix) as r:
        high = page(0, clock)
        await r.handle(high)
        await r.handle(page(1, clock).model_copy(update={"severity": Severity.critical}))
        await r.handle(page(2, clock))  # high again: joins the group (its severity is critical now)
        await r.handle(page(3, clock).model_copy(update={"severity": Severity.low}))
        incidents = await rows(r, Incident)
        [group] = await rows(r, NotifyGroup)
        notes = await rows(r, Notification)
    first, critical, high_again, low = incidents
    assert (first.group_role, critical.group_role, high_again.group_role, low.group_role) == (
        "leader", "leader", "member", "member")
    assert (group.severity, group.leader_id, group.leaders, group.members) == ("critical", critical.id, 2, 2)
    due = {n.incident_id: n.next_attempt_at for n in notes if n.kind == "root"}
    assert due == {first.id: clock() + timedelta(seconds=30), critical.id: clock()}, "critical never waits"
    timeline = [e.kind for e in await r.store.timeline.entries(critical.id)]
    assert "group_led" in timeline


async def test_a_group_that_keeps_firing_is_announced_again_after_the_repeat_interval(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    matrix = grouped(group_interval=timedelta(hours=1), repeat_interval=timedelta(minutes=30))
    async with running(incident_settings, clock=clock, matrix=matrix) as r:
        await r.handle(page(0, clock))
        await r.handle(page(1, clock))
        await eventually(lambda: drained(r, clock), what="the first digest")
        clock.advance(minutes=20)  # (the drain moved the clock a few seconds too)
        await r.handle(page(2, clock))  # within the repeat interval: the same message, updated
        await eventually(lambda: drained(r, clock), what="the update")
        assert len(digests(slack_api)) == 1
        clock.advance(minutes=11)
        await r.handle(page(3, clock))  # 31 minutes after the digest was posted: announced again
        await eventually(lambda: drained(r, clock), what="every notification delivered")
    first, second = digests(slack_api)
    # the ignore below: Warden posts these with metadata; it is None only on messages sent without any
    assert second.metadata["event_payload"]["epoch"] == 2  # type: ignore[index]
    assert set(named(slack_api, first)) == {2, 3} and set(named(slack_api, second)) == {4}
    assert "*3* incident(s) joined" in str(second.blocks), "the new message shows the whole group"


async def test_the_digest_is_updated_not_posted_again_after_a_worker_restart(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    async with running(incident_settings, matrix=DEFAULTS) as r:
        for i in range(4):
            await r.handle(page(i))
        await eventually(lambda: settled(r), what="the digest")
    async with running(incident_settings, matrix=DEFAULTS) as again:  # a new process on the same database
        for i in range(4, 7):
            await again.handle(page(i))
        await eventually(lambda: settled(again), what="the update")
        incidents = await rows(again, Incident)
    [digest] = digests(slack_api)
    assert len(roots(slack_api)) == 1 and digest.updates >= 1
    assert named(slack_api, digest) == Counter({i.id: 1 for i in incidents[1:]})


@pytest.mark.parametrize("incident_db", ["postgresql"], indirect=True)
async def test_two_workers_make_one_digest_and_name_each_member_once(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    slack_api.fail(None, times=10**6, delay_s=0.05)  # slow replies: the two outboxes overlap
    async with running(incident_settings, matrix=DEFAULTS) as a, running(incident_settings, matrix=DEFAULTS) as b:
        await a.handle(page(0))
        for i in range(1, 21):
            await (a if i % 2 else b).handle(page(i, agent=f"support-bot-{1 + i % 2}"))
        await eventually(lambda: settled(a), timeout=60, what="every notification delivered")
        incidents = await rows(a, Incident)
    [digest] = digests(slack_api)
    assert len(roots(slack_api)) == 1
    assert named(slack_api, digest) == Counter({i.id: 1 for i in incidents[1:]}), "each member named once"


async def test_the_digest_s_link_lists_its_group_through_the_api_and_the_cli(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    token = "aiplat-token-0123456789abcdef"
    settings = incident_settings.model_copy(update={"api_tokens": SecretStr(f"ai-platform:{token}"),
                                                    "api_public_url": "https://warden.example.com/"})
    async with served(settings, utcnow, matrix=DEFAULTS) as (r, base):
        for i in range(3):
            await r.handle(page(i))
        await r.handle(finding("billing-agent-1", "tool.x"))  # another route: another group
        await eventually(lambda: settled(r), what="the digest")
        [group, _] = await rows(r, NotifyGroup)
        code, out, err = await acli("incidents", "list", "--group", str(group.id), "-o", "json",
                                    env=api(base, token))
    [digest] = digests(slack_api)
    assert f"<https://warden.example.com/incidents?group={group.id}|list the group>" in str(digest.blocks)
    assert code == 0, err
    listed = json.loads(out)
    assert listed["total"] == 3 and {i["group"] for i in listed["items"]} == {group.id}
    assert sorted(i["group_role"] for i in listed["items"]) == ["leader", "member", "member"]
