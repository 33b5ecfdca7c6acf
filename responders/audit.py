"""The audit trail's hash chains: how an entry's hash is made, and how a chain is checked (pure, no database).

Each incident's timeline is one chain, each approval record's timeline another (`approval:<id>`), each silence's
trail another (`silence:<id>`), and the refused requests (`security_events`) one more. Every entry
carries its position (`seq`, from 1), the hash of the entry before it (`prev_hash`, GENESIS for the first) and its
own `hash`: sha256 over a canonical JSON of everything it says. Editing, reordering or deleting an entry inside a
chain breaks the recomputation at that entry or the next one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
SECURITY_CHAIN = "security"
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True)
class Link:
    """One entry as the chain sees it: `chain` is the incident id (as text) or SECURITY_CHAIN."""

    chain: str
    entry_id: int
    seq: int | None
    prev_hash: str | None
    hash: str | None
    content: Mapping[str, Any]


@dataclass(frozen=True)
class Break:
    """The first entry of a chain whose recomputation fails, and why."""

    chain: str
    entry_id: int
    seq: int | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"chain": self.chain, "entry_id": self.entry_id, "seq": self.seq, "reason": self.reason}


def stamp(at: datetime) -> str:
    """The one text form of a time inside a hash (aware UTC, microseconds), as both backends store it."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def timeline_content(*, incident_id: int, at: datetime, kind: str, actor: str, identity: str | None,
                     policy_sha256: str | None, detail: Mapping[str, Any]) -> dict[str, Any]:
    """`identity`: the acting person's `Actor.identity` (notifier and user in one string), the very text entries
    hashed before the actor had parts, and the one the trail's JSON shows: a copy of the chain verifies alone."""
    return {"incident_id": incident_id, "at": stamp(at), "kind": kind, "actor": actor, "identity": identity,
            "policy_sha256": policy_sha256, "detail": dict(detail)}


def security_content(*, at: datetime, source: str, kind: str, detail: Mapping[str, Any]) -> dict[str, Any]:
    return {"at": stamp(at), "source": source, "kind": kind, "detail": dict(detail)}


def approval_content(*, approval_id: str, at: datetime, kind: str, actor: str, identity: str | None,
                     policy_sha256: str | None, detail: Mapping[str, Any]) -> dict[str, Any]:
    return {"approval_id": approval_id, "at": stamp(at), "kind": kind, "actor": actor, "identity": identity,
            "policy_sha256": policy_sha256, "detail": dict(detail)}


def silence_content(*, silence_id: int, at: datetime, kind: str, actor: str, identity: str | None,
                    detail: Mapping[str, Any]) -> dict[str, Any]:
    return {"silence_id": silence_id, "at": stamp(at), "kind": kind, "actor": actor, "identity": identity,
            "detail": dict(detail)}


def silence_chain(silence_id: int) -> str:
    """The chain name of one silence's trail (never a bare number, so never an incident's chain)."""
    return f"silence:{silence_id}"


def approval_chain(approval_id: str) -> str:
    """The chain name of one approval record's timeline (never a number, so never an incident's chain)."""
    return f"approval:{approval_id}"


def entry_hash(chain: str, seq: int, prev_hash: str, content: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of version, chain, position, previous hash and
    content. JSON columns give back what they were given, so a row read from either backend hashes the same."""
    body = _ENCODER.encode({"v": 1, "chain": chain, "seq": seq, "prev": prev_hash, "content": content})
    return hashlib.sha256(body.encode("ascii")).hexdigest()


def verify(links: Iterable[Link]) -> tuple[int, int, list[Break]]:
    """Recompute every chain: (chains, entries, the first break of each broken chain). `links` must be ordered by
    chain and then seq (ties by entry id)."""
    breaks: list[Break] = []
    chains = entries = 0
    current: str | None = None
    expected_seq, prev, broken = 1, GENESIS, False
    for link in links:
        entries += 1
        if link.chain != current:
            chains += 1
            current, expected_seq, prev, broken = link.chain, 1, GENESIS, False
        if broken:
            continue
        reason = None
        if link.seq is None or link.hash is None or link.prev_hash is None:
            reason = "entry has no place in the chain (seq or hash missing)"
        elif link.seq != expected_seq:
            reason = f"expected entry {expected_seq} of the chain, found {link.seq} (an entry is missing or moved)"
        elif link.prev_hash != prev:
            reason = "prev_hash does not match the entry before it"
        elif entry_hash(link.chain, link.seq, link.prev_hash, link.content) != link.hash:
            reason = "content does not match its hash (the entry was edited)"
        if reason is not None:
            breaks.append(Break(link.chain, link.entry_id, link.seq, reason))
            broken = True
            continue
        expected_seq, prev = expected_seq + 1, link.hash or GENESIS
    return chains, entries, breaks
