"""Event-time sliding windows for the stateful detectors: deterministic (time is `event.ts`) and memory-capped."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime

from warden.contract.matrix import Limit

MAX_KEYS = 100_000


@dataclass
class _Window:
    times: deque[datetime]
    last_fired: datetime | None = None


@dataclass
class WindowCounter:
    """Counts occurrences per key within a limit's window, keeping at most `max + 1` timestamps per key.

    `hit` reports the key once when it goes over the limit, and again at most once per window while it stays
    over, so a loop that runs for an hour yields one finding per window rather than one per call.
    """

    max_keys: int = MAX_KEYS
    _keys: OrderedDict[Hashable, _Window] = field(default_factory=OrderedDict)

    def hit(self, key: Hashable, ts: datetime, limit: Limit) -> bool:
        """Record one occurrence at `ts`; True when it takes the key over `limit` and the key is due to fire."""
        size = limit.max + 1
        w = self._keys.get(key)
        if w is None:
            w = self._keys[key] = _Window(deque(maxlen=size))
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            if w.times.maxlen != size:  # the limit changed with a policy reload
                w.times = deque(w.times, maxlen=size)
        w.times.append(ts)
        over = len(w.times) == size and ts - w.times[0] < limit.window
        if not over or (w.last_fired is not None and ts - w.last_fired < limit.window):
            return False
        w.last_fired = ts
        return True

    def __len__(self) -> int:
        return len(self._keys)
