"""Judge converted sessions with the worker's detectors and count what the issue's protocol counts: a page or a hold
on an injected call (recall), pages and holds on benign sessions (false alerts), each with a Wilson 95% interval."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from bench.third_party.convert import Session
from streams.backtest import backtest
from warden.contract.findings import Finding
from warden.contract.matrix import Tier
from warden.policy import Policy

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials; (0, 1) when there are none."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    k: int
    n: int

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.k + other.k, self.n + other.n)

    def __str__(self) -> str:
        if self.n == 0:
            return "-"
        lo, hi = wilson(self.k, self.n)
        return f"{self.k}/{self.n} {self.k / self.n:.0%} [{lo:.0%}-{hi:.0%}]"


def halves(sessions: Iterable[Session]) -> dict[tuple[str, str], int]:
    """(dataset, scenario id) -> 0 or 1. Within each workflow the scenarios are ordered by sha256 of `dataset/id`
    and the first ceil(n/2) are half 0, so both sessions of a scenario fall in the same half."""
    by_workflow: dict[str, set[tuple[str, str]]] = {}
    for s in sessions:
        by_workflow.setdefault(s.scenario.workflow, set()).add((s.scenario.dataset, s.scenario.scenario_id))
    out: dict[tuple[str, str], int] = {}
    for keys in by_workflow.values():
        ordered = sorted(keys, key=lambda k: hashlib.sha256(f"{k[0]}/{k[1]}".encode()).hexdigest())
        out.update({key: int(i >= (len(ordered) + 1) // 2) for i, key in enumerate(ordered)})
    return out


def enforced(session: Session, policy: Policy) -> list[Finding]:
    """The session's findings that are not in shadow mode, judged alone with fresh detector state."""
    data = "\n".join(json.dumps(e) for e in session.events).encode()
    result = backtest(data, policy)
    assert not result.invalid, (session.session_id, result.invalid)
    return [f for f in result.findings if not f.shadow]


def pages(f: Finding) -> bool:
    return f.tier is Tier.page


def holds(f: Finding) -> bool:
    return f.approval_tier is Tier.hold


def catches(f: Finding, session: Session) -> bool:
    """A page, or a hold (or page) on the approval path, on one of the injected events."""
    return f.event_id in session.injected and (pages(f) or f.approval_tier in (Tier.hold, Tier.page))


@dataclass
class Tally:
    """Recall over hijacked sessions; pages and holds over benign ones; and per rule."""

    caught: Rate = Rate(0, 0)
    paged: Rate = Rate(0, 0)
    held: Rate = Rate(0, 0)
    paged_or_held: Rate = Rate(0, 0)

    def add(self, session: Session, findings: Iterable[Finding], rule: str | None = None) -> None:
        mine = [f for f in findings if rule is None or f.rule == rule]
        if session.hijacked:
            self.caught += Rate(int(any(catches(f, session) for f in mine)), 1)
        else:
            self.paged += Rate(int(any(pages(f) for f in mine)), 1)
            self.held += Rate(int(any(holds(f) for f in mine)), 1)
            self.paged_or_held += Rate(int(any(pages(f) or holds(f) for f in mine)), 1)

    def __iadd__(self, other: Tally) -> Tally:
        self.caught += other.caught
        self.paged += other.paged
        self.held += other.held
        self.paged_or_held += other.paged_or_held
        return self
