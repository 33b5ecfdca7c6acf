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
    """A key's kept entries, (ts, event id) in arrival order, and the set of their ids: made at a key's second entry.
    Most keys only ever hold one (a retry key per distinct call) and keep it as a bare `(ts, event id)` tuple, which
    the garbage collector stops tracking; a container per key is one more object for it to walk on a worker
    holding 100k keys (measured: 1.1 µs per new key without the collector, 2-2.8 µs with it)."""

    __slots__ = ("entries", "ids", "last_fired")

    def __init__(self, first: tuple[datetime, str]) -> None:
        self.entries: deque[tuple[datetime, str]] = deque((first,))
        self.ids: set[str] = {first[1]}
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
    _keys: OrderedDict[Hashable, _Window | tuple[datetime, str]] = field(default_factory=OrderedDict)

    def hit(self, key: Hashable, ts: datetime, limit: Limit, event_id: str) -> bool:
        """Record event `event_id` at `ts`; True when it takes the key over `limit` and the key is due to fire.
        An event id this key has already counted changes nothing and returns False."""
        keys = self._keys
        w = keys.get(key)
        if w is None:
            keys[key] = (ts, event_id)  # one entry is never over a limit (max >= 1)
            if len(keys) > self.max_keys:
                keys.popitem(last=False)
            return False
        keys.move_to_end(key)
        if isinstance(w, tuple):
            if w[1] == event_id:
                return False
            if ts - w[0] >= limit.window:  # its one entry is a window older: it can never count with this one
                keys[key] = (ts, event_id)
                return False
            w = keys[key] = _Window(w)
        elif event_id in w.ids:
            return False
        entries, ids = w.entries, w.ids
        entries.append((ts, event_id))
        ids.add(event_id)
        size = limit.max + 1
        while len(entries) > size:  # more than once only when the limit shrank with a policy reload
            ids.discard(entries.popleft()[1])
        over = len(entries) == size and ts - entries[0][0] < limit.window
        if not over or (w.last_fired is not None and ts - w.last_fired < limit.window):
            return False
        w.last_fired = ts
        return True

    def __len__(self) -> int:
        return len(self._keys)
