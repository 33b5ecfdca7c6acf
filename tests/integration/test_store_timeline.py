"""The timeline room: one hash chain per incident, stamped with the live policy, every string redacted again."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest

from responders.audit import GENESIS, entry_hash, timeline_content
from responders.db.models import Notification
from responders.store.common import WARDEN
from tests.support.incident_helpers import finding
from tests.support.store_rooms import T0, incident_row, rooms_on
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef

PLANTED = "sk-live0PLANTEDsecret0000000000"


async def test_each_entry_chains_to_the_one_before_it_and_hashes_its_own_content(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        async with store.sessions.begin() as s:
            await store.timeline.log_entry(s, 1, T0, "first", detail={"n": 1})
            await store.timeline.log_entry(s, 1, T0, "second", actor="kai", by=Actor("slack", "U0KAI"))
        entries = await store.timeline.entries(1)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0].prev_hash == GENESIS
    for before, entry in pairwise(entries):
        assert entry.prev_hash == before.hash, f"entry {entry.seq} names its predecessor's hash"
    for e in entries:
        assert e.hash == entry_hash(str(e.incident_id), e.seq, e.prev_hash, timeline_content(
            incident_id=e.incident_id, at=e.at, kind=e.kind, actor=e.actor, identity=e.identity,
            policy_sha256=e.policy_sha256, detail=e.detail))
    assert [(e.kind, e.actor, e.identity) for e in entries[-2:]] == [
        ("first", WARDEN, None), ("second", "kai", "U0KAI")]


async def test_two_incidents_have_two_chains(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        await store.incidents.record_finding(finding("billing-agent-2"), T0)
        first, second = await store.timeline.entries(1), await store.timeline.entries(2)
    assert first[0].prev_hash == second[0].prev_hash == GENESIS
    assert {e.incident_id for e in first} == {1} and {e.incident_id for e in second} == {2}


async def test_an_entry_names_the_live_policy_else_the_one_the_incident_was_opened_under(incident_db: str) -> None:
    async with rooms_on(incident_db, live_policy=lambda: "live-sha") as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        opened_under = (await incident_row(store, 1)).policy_sha256
        live = {e.policy_sha256 for e in await store.timeline.entries(1)}
    async with rooms_on(incident_db) as store:
        without = {e.policy_sha256 for e in await store.timeline.entries(1)}
        async with store.sessions.begin() as s:
            await store.timeline.log_entry(s, 1, T0, "later")
        [later] = (await store.timeline.entries(1))[-1:]
    assert opened_under != "live-sha"
    assert live == without == {"live-sha"}
    assert later.policy_sha256 == opened_under


async def test_every_string_of_a_detail_is_redacted_keys_and_nested_values_too(incident_db: str) -> None:
    secret = f"Authorization: Bearer {PLANTED}"
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        async with store.sessions.begin() as s:
            await store.timeline.log_entry(s, 1, T0, "noted", detail={
                secret: "key", "nested": {"list": [secret, 3, None]}, "n": 7})
        [entry] = (await store.timeline.entries(1))[-1:]
    assert PLANTED not in repr(entry.detail)
    assert entry.detail["n"] == 7 and entry.detail["nested"]["list"][1:] == [3, None], "structure and non-strings kept"


@pytest.mark.parametrize("incident_db", ["sqlite"], indirect=True)
async def test_a_silence_made_from_an_incident_is_on_its_timeline(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        await store.timeline.note_silence(1, 7, ['rule="unapproved_tool"'], owner=OwnerRef(id="finance-ops"),
                                          by=Actor("slack", "U0KAI"), now=T0)
        [entry] = (await store.timeline.entries(1))[-1:]
    assert (entry.kind, entry.actor, entry.identity) == ("silence_added", "finance-ops", "U0KAI")
    assert entry.detail == {"silence": 7, "matchers": ['rule="unapproved_tool"']}


@pytest.mark.parametrize("incident_db", ["postgresql"], indirect=True)
async def test_an_append_does_not_wait_for_a_transaction_that_only_added_a_row_of_the_incident(
        incident_db: str) -> None:
    """The append locks the incident FOR NO KEY UPDATE: a delivery's transaction that inserted a notification row of
    the incident holds KEY SHARE on it (its foreign key check) until it ends, and must not block the append. (FOR
    UPDATE would wait for it; two deliveries of one incident doing both could deadlock.) PostgreSQL only: SQLite has
    no row locks."""
    async with rooms_on(incident_db) as store:
        await store.incidents.record_finding(finding("billing-agent-1"), T0)
        async with store.sessions() as other, other.begin():
            other.add(Notification(incident_id=1, notifier="slack", kind="repeat", target={"id": "finance-ops"},
                                   status="pending", attempts=0, next_attempt_at=T0, created_at=T0))
            await other.flush()  # the foreign key check: KEY SHARE on incident 1, held until this transaction ends

            async def append() -> None:
                async with store.sessions.begin() as s:
                    await store.timeline.log_entry(s, 1, T0, "probe")

            await asyncio.wait_for(append(), timeout=5.0)
        kinds = [e.kind for e in await store.timeline.entries(1)]
    assert kinds[-1] == "probe"
