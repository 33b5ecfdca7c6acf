"""The security room: refused requests on one hash chain of their own, and replays of a signed request refused."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from responders.audit import GENESIS, SECURITY_CHAIN, entry_hash, security_content
from responders.db.models import SecurityEvent
from tests.support.store_rooms import T0, rooms_on

PLANTED = "sk-live0PLANTEDsecret0000000000"


async def test_security_events_form_one_chain_with_redacted_details(incident_db: str) -> None:
    async with rooms_on(incident_db) as store:
        await store.security.record_security_event("slack_interaction", "forged", T0, {"ip": "10.0.0.1"})
        await store.security.record_security_event("api", "malformed", T0, {"why": f"Bearer {PLANTED}"})
        async with store.sessions() as s:
            events = list((await s.execute(select(SecurityEvent).order_by(SecurityEvent.seq))).scalars())
    assert [e.seq for e in events] == [1, 2]
    assert (events[0].prev_hash, events[1].prev_hash) == (GENESIS, events[0].hash)
    for e in events:
        assert e.hash == entry_hash(SECURITY_CHAIN, e.seq, e.prev_hash, security_content(
            at=e.at, source=e.source, kind=e.kind, detail=e.detail))
    assert PLANTED not in repr(events[1].detail)


async def test_a_signature_is_first_seen_once_and_forgotten_after_the_replay_window(incident_db: str) -> None:
    keep = timedelta(minutes=5)
    async with rooms_on(incident_db) as store:
        assert await store.security.first_sighting("v0=abc", T0, keep)
        assert await store.security.first_sighting("v0=abc", T0 + keep - timedelta(seconds=1), keep) is False
        assert await store.security.first_sighting("v0=abc", T0 + keep, keep) is False, "still within the window"
        assert await store.security.first_sighting("v0=def", T0, keep), "another signature is its own"
        assert await store.security.first_sighting("v0=abc", T0 + keep + timedelta(seconds=1), keep)
