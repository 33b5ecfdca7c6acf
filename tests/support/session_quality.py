"""Score a replay of the labelled sessions: per-session verdicts, and recall / false-alert rate per rule."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.runtime.catalogue import load
from service.runtime.settings import BUNDLED_POLICY
from streams.backtest import backtest
from warden.contract.findings import Finding
from warden.contract.matrix import Tier

SESSIONS = Path(__file__).resolve().parent / "data" / "sessions"


@dataclass(frozen=True)
class RuleScore:
    """One rule over the labelled set: hijacked sessions it should catch and did; benign sessions it fired on."""

    rule: str
    expected: int
    caught: int
    benign: int
    false_alerts: int

    @property
    def recall(self) -> float:
        return self.caught / self.expected if self.expected else 1.0

    @property
    def false_alert_rate(self) -> float:
        return self.false_alerts / self.benign if self.benign else 0.0


def labels() -> dict[str, Any]:
    return dict(json.loads((SESSIONS / "labels.json").read_text("utf-8")))


def replay_sessions() -> tuple[dict[str, set[str]], int]:
    """Rules that paged per session, and invalid events."""
    result = backtest((SESSIONS / "sessions.jsonl").read_bytes(), load(BUNDLED_POLICY))
    return fired_by_session(result.findings), len(result.invalid)


def fired_by_session(findings: Iterable[Finding]) -> dict[str, set[str]]:
    """Rules that page per session: a shadow finding is never routed, and one kept for review or the log pages
    nobody (docs/scope.md, response tiers)."""
    fired: dict[str, set[str]] = {}
    for f in findings:
        if not f.shadow and f.tier is Tier.page and f.session_id is not None:
            fired.setdefault(f.session_id, set()).add(f.rule)
    return fired


def score(truth: dict[str, Any], fired: dict[str, set[str]]) -> list[RuleScore]:
    benign = [s for s, label in truth.items() if label["verdict"] == "benign"]
    rules = sorted({r for label in truth.values() for r in label["expect"]} | {r for f in fired.values() for r in f})
    out = []
    for rule in rules:
        expecting = [s for s, label in truth.items() if rule in label["expect"]]
        out.append(RuleScore(rule, len(expecting), sum(rule in fired.get(s, ()) for s in expecting), len(benign),
                             sum(rule in fired.get(s, ()) for s in benign)))
    return out
