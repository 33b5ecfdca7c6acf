"""Per-session flow state for the flow rules: which categories a session called lately, bounded in sessions and time.

The activity stream is keyed by agent, so a session (of one agent) lives in one partition, and its trail is part
of that partition's `DetectorState`: rebuilt from the log like the windows (`lookback` covers the longest flow
window). Memory is bounded: a session idle longer than `ttl` (event time) is dropped, and past `max_sessions` the
least recently active one is evicted; both are counted in `warden_flow_sessions_evicted_total{reason}`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from warden.contract.matrix import Category
from warden.policy.scope_checks import SESSION_TTL
from warden.telemetry import metrics

MAX_SESSIONS = 100_000
_RECENT_IDS = 4  # a producer retry lands right after the original: remembering a few ids keeps steps exact


@dataclass(frozen=True)
class Seen:
    """The latest call of one category in a session: when, at which step, which event and tool."""

    ts: datetime
    step: int
    event_id: str
    tool: str


class _Session:
    __slots__ = ("last", "last_ts", "recent", "step")

    def __init__(self) -> None:
        self.step = 0
        self.last: dict[Category, Seen] = {}
        self.last_ts: datetime | None = None
        self.recent: deque[str] = deque(maxlen=_RECENT_IDS)


@dataclass
class SessionTrail:
    """Session key -> the latest call per category and a step counter (tool calls seen in the session)."""

    max_sessions: int = MAX_SESSIONS
    ttl: timedelta = SESSION_TTL
    _sessions: OrderedDict[tuple[str, str], _Session] = field(default_factory=OrderedDict)

    def get(self, key: tuple[str, str]) -> _Session | None:
        return self._sessions.get(key)

    def step(self, key: tuple[str, str], ts: datetime, event_id: str) -> tuple[_Session, int] | None:
        """Count one tool call in the session and return it with its step number; None for an event id the
        session has just counted (a redelivery), which must change nothing."""
        self._expire(ts)
        s = self._sessions.get(key)
        if s is None:
            s = self._sessions[key] = _Session()
            if len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
                metrics.FLOW_SESSIONS_EVICTED.labels(reason="cap").inc()
        else:
            if event_id in s.recent:
                return None
            self._sessions.move_to_end(key)
        s.step += 1
        s.recent.append(event_id)
        if s.last_ts is None or ts > s.last_ts:
            s.last_ts = ts
        return s, s.step

    def _expire(self, now: datetime) -> None:
        """Drop sessions idle for longer than the TTL, oldest activity first (event time)."""
        sessions = self._sessions
        while sessions:
            key, oldest = next(iter(sessions.items()))
            if oldest.last_ts is None or now - oldest.last_ts <= self.ttl:
                return
            del sessions[key]
            metrics.FLOW_SESSIONS_EVICTED.labels(reason="ttl").inc()

    def __len__(self) -> int:
        return len(self._sessions)
