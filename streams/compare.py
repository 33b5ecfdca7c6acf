"""What changes between two policies on the same recorded events, before the new one is enforced: the findings that
appear and disappear per rule and workflow and, against labelled sessions (or events), the precision and recall of
each and the regressions CI gates on (`warden replay --against`, docs/replay.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from warden.contract.findings import Finding
from warden.contract.matrix import Tier

Key = tuple[str, str, str, str]  # rule, workflow, event id, target
VERDICTS = ("benign", "hijacked")


def key(f: Finding) -> Key:
    return f.rule, f.workflow or "", f.event_id, f.target or ""


@dataclass
class Diff:
    """Findings only the new policy raises (appeared) and only the old one raises (disappeared)."""

    appeared: list[Finding] = field(default_factory=list)
    disappeared: list[Finding] = field(default_factory=list)

    def by_rule(self) -> list[tuple[str, str, int, int]]:
        """(rule, workflow, appeared, disappeared), sorted."""
        up = Counter((f.rule, f.workflow or "") for f in self.appeared)
        down = Counter((f.rule, f.workflow or "") for f in self.disappeared)
        return [(r, w, up[r, w], down[r, w]) for r, w in sorted(set(up) | set(down))]


def diff(old: Iterable[Finding], new: Iterable[Finding]) -> Diff:
    """Compared by rule, workflow, event and target; a finding whose shadow mode changed is not a change here."""
    old_list, new_list = list(old), list(new)
    old_keys, new_keys = {key(f) for f in old_list}, {key(f) for f in new_list}
    return Diff([f for f in new_list if key(f) not in old_keys], [f for f in old_list if key(f) not in new_keys])


def alerts(f: Finding, shadow_counts: bool = False) -> bool:
    """A finding that reaches a person: routed (not shadow, unless `shadow_counts`), and a page, or a hold on the
    approval path. Review and log tiers page nobody."""
    return (shadow_counts or not f.shadow) and (f.tier is Tier.page or f.approval_tier in (Tier.hold, Tier.page))


def read_labels(doc: Any) -> dict[str, str]:
    """`{"ID": "benign" | "hijacked"}` or `{"ID": {"verdict": ...}}`, ID a session id or an event id. Raises
    ValueError naming the first bad entry."""
    if not isinstance(doc, Mapping):
        raise ValueError("labels must be a JSON object: {\"SESSION_OR_EVENT_ID\": \"benign\" | \"hijacked\"}")
    out: dict[str, str] = {}
    for unit, label in doc.items():
        verdict = label.get("verdict") if isinstance(label, Mapping) else label
        if verdict not in VERDICTS:
            raise ValueError(f"label of {unit!r} is not one of {', '.join(VERDICTS)}")
        out[str(unit)] = str(verdict)
    return out


@dataclass(frozen=True)
class Score:
    """Per labelled unit (session or event): alerted hijacked = true positives; alerted benign = false positives."""

    alerted: frozenset[str]
    hijacked: int
    benign: int
    caught: int
    false_alerts: int

    @property
    def precision(self) -> float | None:
        flagged = self.caught + self.false_alerts
        return self.caught / flagged if flagged else None

    @property
    def recall(self) -> float | None:
        return self.caught / self.hijacked if self.hijacked else None

    def as_dict(self) -> dict[str, Any]:
        return {"hijacked": self.hijacked, "benign": self.benign, "caught": self.caught,
                "false_alerts": self.false_alerts, "precision": self.precision, "recall": self.recall}


def score(labels: Mapping[str, str], findings: Iterable[Finding], shadow_counts: bool = False) -> Score:
    """A unit is alerted when a finding that alerts has its session id or its event id."""
    alerted: set[str] = set()
    for f in findings:
        if alerts(f, shadow_counts):
            alerted.update(u for u in (f.session_id, f.event_id) if u is not None and u in labels)
    hijacked = [u for u, v in labels.items() if v == "hijacked"]
    benign = [u for u, v in labels.items() if v == "benign"]
    return Score(frozenset(alerted), len(hijacked), len(benign), sum(u in alerted for u in hijacked),
                 sum(u in alerted for u in benign))


@dataclass(frozen=True)
class Regressions:
    """Benign units the new policy alerts on and the old did not; hijacked units the old caught and the new misses."""

    new_false_alerts: list[str]
    new_misses: list[str]

    def __bool__(self) -> bool:
        return bool(self.new_false_alerts or self.new_misses)


def regressions(labels: Mapping[str, str], old: Score, new: Score) -> Regressions:
    return Regressions(
        sorted(u for u, v in labels.items() if v == "benign" and u in new.alerted and u not in old.alerted),
        sorted(u for u, v in labels.items() if v == "hijacked" and u in old.alerted and u not in new.alerted))
