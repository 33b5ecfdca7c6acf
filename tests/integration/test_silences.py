"""Silences (issue 32), on both backends: matchers, a match and no match, expiry, overlapping silences, the incident
API and `warden silence add|query|expire`, the Slack "Silence 1 h" button authorised like the other buttons (a
refused click recorded), containment still running for a silenced page, and every change on the silence's trail."""

from __future__ import annotations

import json
from datetime import timedelta

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from responders.db.models import Incident, Notification, SilenceEntry
from responders.incident_responder import IncidentResponder
from responders.silences import SilenceError
from responders.store.common import utcnow
from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import Settings
from tests.conftest import SLACK_SIGNING_SECRET
from tests.integration.test_incident_cli import acli, api
from tests.support.containment_helpers import containment_policy, engine_on, violation
from tests.support.incident_helpers import FakeClock, block_actions, eventually, finding, served, signed
from warden.contract.matchers import exact_matcher, matches_all, parse_matcher, parse_matchers

AUTO_TELL = [{"rules": ["unapproved_tool"], "playbook": "tell", "gate": "auto", "min_severity": "low"}]
TOKEN = "team-token-0123456789abcdef"


def test_matchers_parse_and_match_as_alertmanager_s() -> None:
    labels = {"rule": "unapproved_tool", "agent": "billing-agent-1", "target": "vault://billing/key",
              "severity": "high", "workflow": ""}
    assert parse_matcher('rule="unapproved_tool"').matches(labels)
    assert parse_matcher("rule=unapproved_tool").matches(labels), "a bare value reads as quoted"
    assert not parse_matcher('rule!="unapproved_tool"').matches(labels)
    assert parse_matcher('agent=~"billing-.*"').matches(labels) and not parse_matcher('agent=~"billing"').matches(
        labels), "a regex is anchored at both ends"
    assert parse_matcher('target="vault://billing/*"').matches(labels), "a value with * is a glob"
    assert parse_matcher('workflow=""').matches(labels), "an unowned agent's workflow is empty"
    assert matches_all(parse_matchers(['severity!~"low|medium"', 'agent=~"b.*"']), labels)
    for bad, why in (('colour="red"', "unknown label"), ('agent=~"("', "not a regular expression"),
                     ("agent", "is not a matcher")):
        with pytest.raises(ValueError, match=why):
            parse_matcher(bad)
    star = exact_matcher("target", "db://t*")
    assert parse_matcher(star).matches({"target": "db://t*"}) and not parse_matcher(star).matches(
        {"target": "db://tx"}), "a value holding glob characters, matched exactly"


async def _incident(r: IncidentResponder, incident_id: int) -> Incident:
    async with r.store.sessions() as s:
        row = await s.get(Incident, incident_id)
        assert row is not None
        return row


async def _notes(r: IncidentResponder) -> list[Notification]:
    async with r.store.sessions() as s:
        return list((await s.execute(select(Notification).order_by(Notification.id))).scalars())


async def test_a_silence_mutes_what_it_matches_until_it_ends_and_overlaps_name_the_longest(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    async with served(incident_settings, clock) as (r, _):
        now = clock()
        short = await r.silences.add(['rule="unapproved_tool"', 'agent="support-bot-1"'], starts_at=now,
                                     ends_at=now + timedelta(minutes=30), comment="maintenance", author="priya",
                                     identity="test", now=now)
        long = await r.silences.add(['workflow="support-assistant"'], starts_at=now, ends_at=now + timedelta(hours=1),
                                    comment="bot redeploy", author="kai", identity="test", now=now)
        await r.handle(finding("support-bot-1", "shell.exec", ts=now))  # both match: the longer one is named
        await r.handle(finding("billing-agent-1", "shell.exec", ts=now))  # neither matches: pages
        first, other = await _incident(r, 1), await _incident(r, 2)
        assert (first.silenced_by, other.silenced_by) == (long.id, None)
        assert [n.incident_id for n in await _notes(r)] == [other.id], "nothing recorded to tell anyone of #1"
        await r.silences.expire(long.id, identity="test", actor="kai", now=clock())
        await r.handle(finding("support-bot-1", "net.fetch", ts=clock()))  # only the short one is left
        assert (await _incident(r, 3)).silenced_by == short.id
        clock.advance(minutes=31)  # the short one has ended too: the next page of #1 pages it, with its count
        await r.handle(finding("support-bot-1", "shell.exec", ts=clock()))
        muted_again = await _incident(r, 1)
        # The page's delivery ("notified") is recorded by the outbox whenever it gets there: not part of the order.
        timeline = [(e.kind, e.detail.get("silence")) for e in await r.store.timeline.entries(1)
                    if e.kind != "notified"]
        await eventually(lambda: len(slack_api.roots("C0AIPLAT")) == 1, what="#1 paged after its silence ended")
        verdict = await r.trail.verify()
    assert muted_again.silenced_by is None and muted_again.count == 2
    assert ("silenced", long.id) in timeline and timeline[-2:] == [("grouped", None), ("unmuted", long.id)]
    assert verdict.ok and verdict.chains >= 4  # incidents and the silences' own trails
    [root] = slack_api.roots("C0AIPLAT")
    assert "2×" in str(root.blocks)


async def test_a_silenced_page_is_still_contained(incident_settings: Settings, slack_api: SlackApiServer) -> None:
    clock = FakeClock()
    policy = containment_policy(AUTO_TELL)
    async with served(incident_settings, clock) as (r, _), aiohttp.ClientSession() as http:
        await r.silences.add(['agent="iam-agent"'], starts_at=clock(), ends_at=clock() + timedelta(hours=1),
                             comment="known noisy", author="jordan", identity="test", now=clock())
        await r.handle(violation(policy))
        engine = engine_on(r, policy, http, clock=clock)
        await engine.run_due()
        kinds = [e.kind for e in await r.store.timeline.entries(1)]
        notes = await _notes(r)
    assert "silenced" in kinds and "containment_step_done" in kinds, kinds
    assert notes == [] and slack_api.requests == [], "a silence mutes people, not playbooks"


async def test_silences_through_the_api_and_the_cli_are_on_their_trail(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    settings = incident_settings.model_copy(update={"api_tokens": SecretStr(f"ai-platform:{TOKEN}")})
    async with served(settings, utcnow) as (r, base), aiohttp.ClientSession() as http:  # the CLI's clock
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(f"{base}/silences", headers=headers, json={"matchers": ['rule="x"']}) as resp:
            assert resp.status == 400 and "comment" in (await resp.json())["error"]
        async with http.post(f"{base}/silences", headers=headers, json={
                "matchers": ['rule="unapproved_tool"'], "comment": "rollout", "duration": "2h"}) as resp:
            made = await resp.json()
            assert resp.status == 201 and made["author"] == "ai-platform" and made["state"] == "active"
        code, out, err = await acli("silence", "add", 'agent=~"support-.*"', "-c", "bot fleet upgrade", "-d", "30m",
                                    "-o", "json", env=api(base, TOKEN))
        assert code == 0, err
        by_cli = json.loads(out)
        code, _, err = await acli("silence", "add", 'colour="red"', "-c", "x", env=api(base, TOKEN))
        assert code == 2 and "unknown label" in err
        code, out, _ = await acli("silence", "query", env=api(base, TOKEN))
        assert code == 0 and out.splitlines()[-1].startswith("2 silence(s)")
        code, out, _ = await acli("silence", "query", 'agent=~"support-.*"', "-o", "json", env=api(base, TOKEN))
        assert [i["id"] for i in json.loads(out)["items"]] == [by_cli["id"]]
        code, out, _ = await acli("silence", "expire", str(made["id"]), env=api(base, TOKEN))
        assert code == 0 and f"silence #{made['id']} expired" in out
        code, _, err = await acli("silence", "expire", str(made["id"]), "999", env=api(base, TOKEN))
        assert code == 1 and "expired already" in err and "does not exist" in err
        code, out, _ = await acli("silence", "query", "--expired", "-o", "json", env=api(base, TOKEN))
        states = {i["id"]: i["state"] for i in json.loads(out)["items"]}
        async with r.store.sessions() as s:
            trail = [(e.silence_id, e.kind, e.identity) for e in (await s.execute(
                select(SilenceEntry).order_by(SilenceEntry.id))).scalars()]
        code, out, _ = await acli("audit", "verify", env=api(base, TOKEN))
    assert states == {made["id"]: "expired", by_cli["id"]: "active"}
    assert [(i, k) for i, k, _ in trail] == [(made["id"], "created"), (by_cli["id"], "created"),
                                             (made["id"], "expired")]
    assert all(identity and identity.startswith("api:") for _, _, identity in trail)
    assert code == 0 and out.startswith("ok: ")


async def test_a_silence_needs_matchers_a_comment_an_author_and_an_end_after_its_start(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    clock = FakeClock()
    async with served(incident_settings, clock) as (r, _):
        now = clock()
        for matchers, comment, author, end, why in (
                ([], "c", "a", now + timedelta(hours=1), "at least one matcher"),
                (['rule="x"'], " ", "a", now + timedelta(hours=1), "comment"),
                (['rule="x"'], "c", "", now + timedelta(hours=1), "author"),
                (['rule="x"'], "c", "a", now, "end after it starts")):
            with pytest.raises(SilenceError, match=why):
                await r.silences.add(matchers, starts_at=now, ends_at=end, comment=comment, author=author,
                                     identity="test", now=now)


async def test_the_silence_button_is_the_responder_s_or_the_approver_s_and_a_refusal_is_recorded(
    incident_settings: Settings, slack_api: SlackApiServer
) -> None:
    async with served(incident_settings, FakeClock()) as (r, base), aiohttp.ClientSession() as http:
        await r.handle(finding("support-bot-1", "shell.exec"))
        await eventually(lambda: slack_api.roots("C0AIPLAT"), what="the root, with its Silence 1 h button")
        for user in ("U0SAM", "U0KAI"):  # billing's approver: not this workflow's; then an ai-platform member
            body = block_actions(1, "warden.silence", user, channel="C0AIPLAT")
            async with http.post(f"{base}/slack/interactions", data=body,
                                 headers=signed(SLACK_SIGNING_SECRET, body)) as resp:
                assert resp.status == 200
            assert r.interactivity is not None  # the served app's Slack route answered the click
            await r.interactivity.drain()
        [made] = await r.silences.query(FakeClock()())
        await r.handle(finding("support-bot-1", "shell.exec", evidence={"again": "1"}))
        timeline = [(e.kind, e.identity) for e in await r.store.timeline.entries(1)]
        muted = await _incident(r, 1)
    assert ("refused", "U0SAM") in timeline and ("silence_added", "U0KAI") in timeline
    assert made.author == "ai-platform" and made.created_by == "slack:U0KAI"
    assert set(made.matchers) == {'workflow="support-assistant"', 'rule="unapproved_tool"', 'agent="support-bot-1"',
                                  'target="shell.exec"', f'severity="{muted.severity}"'}
    assert muted.silenced_by == made.id and timeline[-1][0] == "silenced"
    assert slack_api.ephemerals[0]["text"].startswith("Refused: only AI Platform on-call or Priya")
    assert "Silenced until" in slack_api.ephemerals[1]["text"]
