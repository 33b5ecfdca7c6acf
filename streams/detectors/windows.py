"""Event-time sliding windows for the stateful detectors: deterministic (time is `event.ts`), memory-capped, and
idempotent by event id (a redelivered event is not counted twice)."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime

from warden.contract.matrix import Limit

MAX_KEYS = 100_000


class _Window:
    """A key's kept entries, (ts, event id) in arrival order, and the set of their ids once there are two or more.
    Most keys only ever hold one (a retry key per distinct call), and every container per key is one more object
    for the garbage collector to walk on a worker holding 100k keys: measured, an eager set cost ~3 µs/event."""

    __slots__ = ("entries", "ids", "last_fired")

    def __init__(self) -> None:
        self.entries: deque[tuple[datetime, str]] = deque()
        self.ids: set[str] | None = None
        self.last_fired: datetime | None = None


@dataclass
class WindowCounter:
    """Counts occurrences per key within a limit's window, keeping at most `max + 1` entries per key.

    `hit` reports the key once when it goes over the limit, and again at most once per window while it stays
    over, so a loop that runs for an hour yields one finding per window rather than one per call. An event id
    already among a key's kept entries is not counted again: a producer retry or a redelivery (the same event at
    a new offset, or the same offset re-read) usually lands right after the original, well within those entries.
    Replays from further back are the caller's to skip (`DetectorState.first_time`).
    """

    max_keys: int = MAX_KEYS
    _keys: OrderedDict[Hashable, _Window] = field(default_factory=OrderedDict)

    def hit(self, key: Hashable, ts: datetime, limit: Limit, event_id: str) -> bool:
        """Record event `event_id` at `ts`; True when it takes the key over `limit` and the key is due to fire.
        An event id this key has already counted changes nothing and returns False."""
        size = limit.max + 1
        w = self._keys.get(key)
        if w is None:
            w = self._keys[key] = _Window()
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            seen = w.ids
            if (event_id in seen) if seen is not None else w.entries[0][1] == event_id:  # a key has an entry
                return False
        entries = w.entries
        entries.append((ts, event_id))
        ids = w.ids
        if ids is not None:
            ids.add(event_id)
        elif len(entries) > 1:
            ids = w.ids = {e[1] for e in entries}
        while len(entries) > size:  # more than once only when the limit shrank with a policy reload
            evicted = entries.popleft()[1]
            if ids is not None:
                ids.discard(evicted)
        over = len(entries) == size and ts - entries[0][0] < limit.window
        if not over or (w.last_fired is not None and ts - w.last_fired < limit.window):
            return False
        w.last_fired = ts
        return True

    def __len__(self) -> int:
        return len(self._keys)
