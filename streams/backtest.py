"""Replay recorded activity through the detectors offline: the same `detect` as the worker, event time driving the
windows, invalid events reported and skipped. `warden replay` prints what this returns."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from streams.detectors import DetectorState, detect
from streams.detectors.custom import RuleErrorTally
from streams.ingest import FORMATS
from warden.contract.findings import Finding
from warden.policy import Policy

MAX_RECORD_BYTES = 64 << 20  # one line or one whole-file document; far above any Kafka message


@dataclass(frozen=True)
class Invalid:
    """An event (or a line) that failed validation: where it is in the file, and why."""

    where: str
    reason: str


@dataclass
class Backtest:
    """What a replay found, in input order."""

    events: int = 0
    findings: list[Finding] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)
    rule_errors: dict[str, RuleErrorTally] = field(default_factory=dict)
    """Per custom rule that raised on some event: how often, and the first event and error."""

    def summary(self) -> list[tuple[str, str, bool, int]]:
        """(rule, severity, shadow, count), sorted so the same input always prints the same lines."""
        counts = Counter((f.rule, f.severity.value, f.shadow) for f in self.findings)
        return [(r, s, sh, n) for (r, s, sh), n in sorted(counts.items())]


def records(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The file as one document (a JSON array or object, pretty-printed or not) when it parses as one; otherwise
    JSON Lines, each line one record (an object or an array)."""
    try:
        json.loads(data)
    except ValueError:
        for n, line in enumerate(data.splitlines(), 1):
            if line.strip():
                yield f"line {n}", line
        return
    yield "file", data


def backtest(data: bytes, policy: Policy, fmt: str = "native") -> Backtest:
    """Decode every record with the ingest format `fmt`, then judge each valid event in order with fresh state."""
    decode = FORMATS[fmt]
    state = DetectorState()
    out = Backtest()
    for where, raw in records(data):
        decoded = decode(raw, MAX_RECORD_BYTES)
        for rejection in decoded.rejections:
            at = where if rejection.index is None else f"{where}, element {rejection.index}"
            out.invalid.append(Invalid(at, rejection.reason))
        for event in decoded.events:
            out.events += 1
            out.findings.extend(detect(event, policy, state))
    out.rule_errors = dict(sorted(state.rule_errors.by_rule.items()))
    return out
