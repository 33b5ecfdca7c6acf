"""Per-session provenance: keyed fingerprints of the values a session's request and tool results held, never the text.

A fingerprint is BLAKE2b keyed with a random key made when the process starts (a MAC, like HMAC): the fingerprints
never leave the process, and the state is rebuilt from the log after a restart or rebalance, so no key has to be
shared or stored, and a memory dump yields nothing to test guesses against once the process is gone. Each value
keeps where it was first read (event id and tool) so a finding can name it.

Bounded like the flow trail: a session idle longer than its workflow's `provenance.within` (event time) is dropped,
a session keeps at most `max_per_session` fingerprints (its oldest results' values go first; the request's are
kept), and past `max_total` the least recently active sessions go. Every drop is counted in
`warden_provenance_evicted_total{reason}`; `warden_provenance_values` is the total kept.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from warden.telemetry import metrics

MAX_PER_SESSION = 4_096
MAX_TOTAL = 1_000_000
_KEY = os.urandom(32)


def fingerprint(value: str) -> int:
    """The keyed 64-bit fingerprint of a normalised value."""
    return int.from_bytes(hashlib.blake2b(value.encode(), key=_KEY, digest_size=8).digest(), "big")


@dataclass(frozen=True)
class Origin:
    """Where a value was read: the event that carried it and its tool."""

    event_id: str
    tool: str


class Session:
    """One session's fingerprints: the request's (trusted), untrusted results' with their origin, other results',
    and the pieces of values with digits in untrusted results (for values split across outputs)."""

    __slots__ = ("last_ts", "other", "pieces", "trusted", "untrusted")

    def __init__(self) -> None:
        self.trusted: set[int] = set()
        self.untrusted: dict[int, Origin] = {}
        self.pieces: dict[int, Origin] = {}
        self.other: dict[int, None] = {}
        self.last_ts: datetime | None = None

    def __len__(self) -> int:
        return len(self.trusted) + len(self.untrusted) + len(self.pieces) + len(self.other)

    def fingerprints(self) -> tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int]]:
        """What the session holds, comparable across two states made in one process (tests, rebuilds)."""
        return (frozenset(self.trusted), frozenset(self.untrusted), frozenset(self.pieces), frozenset(self.other))


@dataclass
class ProvenanceLedger:
    """Session key (agent, session) -> its Session, least recently active first."""

    max_per_session: int = MAX_PER_SESSION
    max_total: int = MAX_TOTAL
    _sessions: OrderedDict[tuple[str, str], Session] = field(default_factory=OrderedDict)
    _total: int = 0

    def get(self, key: tuple[str, str]) -> Session | None:
        return self._sessions.get(key)

    def session(self, key: tuple[str, str], ts: datetime, within: timedelta) -> Session:
        """The session (made if new), marked active at `ts`, after dropping sessions idle past `within`."""
        self._expire(ts, within)
        s = self._sessions.get(key)
        if s is None:
            s = self._sessions[key] = Session()
        else:
            self._sessions.move_to_end(key)
        if s.last_ts is None or ts > s.last_ts:
            s.last_ts = ts
        return s

    def add(self, s: Session, source: str, values: Iterable[str], pieces: Iterable[str], origin: Origin) -> None:
        """Remember a read's values as `source` (trusted, untrusted or other), then enforce the bounds."""
        before = len(s)
        if source == "trusted":
            s.trusted.update(fingerprint(v) for v in values)
        elif source == "untrusted":
            for v in values:
                s.untrusted.setdefault(fingerprint(v), origin)
            for p in pieces:
                s.pieces.setdefault(fingerprint("piece:" + p), origin)
        else:
            for v in values:
                s.other.setdefault(fingerprint(v), None)
        self._total += len(s) - before
        self._bound(s)

    def _bound(self, s: Session) -> None:
        over = len(s) - self.max_per_session
        if over > 0:
            dropped = 0
            for kept in (s.pieces, s.other, s.untrusted):  # oldest first in each; the request's values stay
                while over > dropped and kept:
                    del kept[next(iter(kept))]
                    dropped += 1
            self._total -= dropped
            metrics.PROVENANCE_EVICTED.labels(reason="session_cap").inc(dropped)
        while self._total > self.max_total and len(self._sessions) > 1:
            _, oldest = self._sessions.popitem(last=False)
            self._total -= len(oldest)
            metrics.PROVENANCE_EVICTED.labels(reason="total_cap").inc()
        metrics.PROVENANCE_VALUES.set(self._total)

    def _expire(self, now: datetime, within: timedelta) -> None:
        sessions = self._sessions
        while sessions:
            key, oldest = next(iter(sessions.items()))
            if oldest.last_ts is None or now - oldest.last_ts <= within:
                return
            del sessions[key]
            self._total -= len(oldest)
            metrics.PROVENANCE_EVICTED.labels(reason="ttl").inc()

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def total(self) -> int:
        return self._total
