"""Inhibition (issue 32), on both backends: while a critical incident whose agent is quarantined is open, that agent's
other pages are recorded and grouped, contained, and not paged (the default rule); when it closes, pages resume; a
rule of the matrix in Alertmanager's shape (source and target matchers, equal labels)."""

from __future__ import annotations

import aiohttp
from sqlalchemy import select

from responders.db.models import ContainmentStep, Incident, Notification
from responders.incident_responder import IncidentResponder
from responders.incidents import Status
from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import Settings
from tests.support.containment_helpers import containment_policy, engine_on, violation
from tests.support.incident_helpers import ONE_GROUP_PER_INCIDENT, FakeClock, finding, running
from warden.contract.actors import Actor
from warden.contract.findings import Finding, OwnerRef
from warden.contract.matrix import InhibitRule, Severity

AUTO_TELL = [{"rules": ["unapproved_tool"], "playbook": "tell", "gate": "auto", "min_severity": "low"}]
TEAM = OwnerRef(id="ai-platform", name="AI Platform on-call", kind="team", contacts={"slack": "C0AIPLAT"},
                members={"slack": ("U0KAI",)})


async def _quarantined(r: IncidentResponder, incident_id: int, at: FakeClock) -> None:
    """The incident's playbook quarantined its agent (as the engine records a done quarantine step)."""
    async with r.store.sessions.begin() as s:
        s.add(ContainmentStep(incident_id=incident_id, playbook="contain_agent", step=0, action="quarantine_agent",
                              params={}, gate="auto", on_failure="escalate", dry_run=False, approval_timeout_s=0.0,
                              status="done", decided_by="warden", attempts=1, next_attempt_at=at(), detail={},
                              finding_ts=at(), created_at=at(), updated_at=at(), ended_at=at()))


async def _rows(r: IncidentResponder, model: type) -> list:  # type: ignore[type-arg]
    async with r.store.sessions() as s:
        return list((await s.execute(select(model).order_by(model.id))).scalars())  # type: ignore[attr-defined]


def critical(agent: str, tool: str, clock: FakeClock) -> Finding:
    return finding(agent, tool, ts=clock()).model_copy(update={"severity": Severity.critical})


async def test_a_quarantined_critical_incident_inhibits_its_agents_other_pages_until_it_closes(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    async with running(incident_settings, clock=clock) as r:
        await r.handle(critical("support-bot-1", "shell.exec", clock))
        await r.handle(finding("support-bot-1", "net.fetch", ts=clock()))  # not quarantined yet: pages
        await _quarantined(r, 1, clock)
        await r.handle(finding("support-bot-1", "db.drop", ts=clock()))  # inhibited by #1
        await r.handle(finding("support-bot-2", "db.drop", ts=clock()))  # another agent: pages
        await r.handle(finding("support-bot-1", "net.fetch", ts=clock()))  # a repeat of #2: muted now too
        inhibited = [(i.id, i.inhibited_by, i.count) for i in await _rows(r, Incident)]
        before = await _rows(r, Notification)
        notes_before = {n.id for n in before}
        assert await r.store.incidents.transition(1, Status.open, Status.acknowledged, owner=TEAM, by=Actor("slack",
                                                                                                            "U0KAI"),
                                                  note="ack", now=clock())
        assert await r.store.incidents.transition(1, Status.acknowledged, Status.resolved, owner=TEAM,
                                                  by=Actor("slack", "U0KAI"),
                                                  note="done", now=clock())
        clock.advance(minutes=1)
        await r.handle(finding("support-bot-1", "db.drop", ts=clock()))  # #3 again: its source closed, it pages
        await r.handle(finding("support-bot-1", "fs.write", ts=clock()))  # a new page of the agent pages
        after = await _rows(r, Incident)
        new_roots = [n.incident_id for n in await _rows(r, Notification)
                     if n.id not in notes_before and n.kind == "root"]
        timeline = [e.kind for e in await r.store.timeline.entries(3)]
    assert inhibited == [(1, None, 1), (2, 1, 2), (3, 1, 1), (4, None, 1)]
    assert 3 not in {n.incident_id for n in before}, "nobody was told of the inhibited page"
    assert [n.kind for n in before if n.incident_id == 2] == ["root"], "nor of #2's repeat once it was inhibited"
    assert [i.inhibited_by for i in after] == [None, 1, None, None, None]
    assert sorted(new_roots) == [3, 5], "pages resume once the source closed: #3 on its repeat, #5 as it opens"
    assert timeline[:2] == ["opened", "inhibited"] and "unmuted" in timeline


async def test_an_inhibited_page_is_still_contained(incident_settings: Settings, slack_api: SlackApiServer) -> None:
    clock = FakeClock()
    policy = containment_policy(AUTO_TELL)
    async with running(incident_settings, clock=clock) as r, aiohttp.ClientSession() as http:
        source = violation(policy, name="rm.rf").model_copy(update={"severity": Severity.critical})
        await r.handle(source)
        await _quarantined(r, 1, clock)
        await r.handle(violation(policy, name="shell.exec"))
        engine = engine_on(r, policy, http, clock=clock)
        await engine.run_due()
        await engine.run_due()
        target = next(i for i in await _rows(r, Incident) if i.id == 2)
        kinds = [e.kind for e in await r.store.timeline.entries(2)]
    assert target.inhibited_by == 1
    assert "inhibited" in kinds and "containment_step_done" in kinds, kinds


async def test_a_matrix_rule_with_source_and_target_matchers_and_equal_labels(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    rule = InhibitRule(source_matchers=['target="kill.switch"'], target_matchers=['severity!="critical"'],
                       equal=["workflow"])
    matrix = ONE_GROUP_PER_INCIDENT.model_copy(update={"notifications": ONE_GROUP_PER_INCIDENT.notifications
                                                       .model_copy(update={"inhibit_rules": [rule]})})
    async with running(incident_settings, clock=clock, matrix=matrix) as r:
        await r.handle(finding("support-bot-1", "kill.switch", ts=clock()))  # the source: open
        await r.handle(finding("support-bot-2", "shell.exec", ts=clock()))  # same workflow: inhibited
        await r.handle(critical("support-bot-2", "net.fetch", clock))  # critical: not a target
        await r.handle(finding("billing-agent-1", "shell.exec", ts=clock()))  # another workflow: pages
        rows = [(i.id, i.inhibited_by) for i in await _rows(r, Incident)]
    assert rows == [(1, None), (2, 1), (3, None), (4, None)]
