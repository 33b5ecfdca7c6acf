"""The third-party table: convert, split, author a policy per fold, judge, and print every rate with its bounds."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable

from bench.third_party import author, datasets
from bench.third_party.convert import CONVERTERS, Scenario, Session, sessions
from bench.third_party.score import Tally, enforced, halves
from warden.contract.findings import Finding

FOLDS = ("A", "B")  # fold A: policy from half 0, judged on half 1 (held out); fold B the other way round


def _row(label: str, protocol: str, fold: str, t: Tally) -> str:
    return f"{label:<24} {protocol:<10} {fold:<5} {t.caught!s:<24} {t.paged!s:<24} {t.held!s:<24}"


def _judged(all_sessions: list[Session]) -> list[tuple[int, str, Session, list[Finding]]]:
    """(fold, protocol, session, enforced findings) for both folds."""
    half = halves(all_sessions)
    out = []
    for fold in (0, 1):
        training = [s for s in all_sessions
                    if not s.hijacked and half[s.scenario.dataset, s.scenario.scenario_id] == fold]
        policy = author.policy(training)
        for s in all_sessions:
            protocol = "in-sample" if half[s.scenario.dataset, s.scenario.scenario_id] == fold else "held-out"
            out.append((fold, protocol, s, enforced(s, policy)))
    return out


def _tally(rows: Iterable[tuple[int, str, Session, list[Finding]]], rule: str | None = None) -> Tally:
    t = Tally()
    for _, _, s, findings in rows:
        t.add(s, findings, rule)
    return t


def main() -> int:
    try:
        records = {name: datasets.read(name) for name in CONVERTERS}
    except datasets.MissingDataSet as exc:
        print(exc, file=sys.stderr)
        return 2
    scenarios: list[Scenario] = [CONVERTERS[name](r) for name, rs in records.items() for r in rs]
    all_sessions = [s for sc in scenarios for s in sessions(sc)]
    judged = _judged(all_sessions)
    attacks = Counter((sc.dataset, sc.attack) for sc in scenarios)
    print(f"{len(scenarios)} scenarios -> {sum(not s.hijacked for s in all_sessions)} benign and "
          f"{sum(s.hijacked for s in all_sessions)} hijacked sessions; policy per fold written from half of the "
          "benign sessions (docs/replay.md)")
    print("recall: hijacked sessions with a page, or a hold on the approval path, on an injected call; "
          "benign: sessions with a page / with a hold. 95% Wilson bounds.")
    print(f"{'data set':<24} {'protocol':<10} {'fold':<5} {'recall':<24} {'benign paged':<24} {'benign held':<24}")
    for name in [*CONVERTERS, "all"]:
        mine = [j for j in judged if name in ("all", j[2].scenario.dataset)]
        for protocol in ("in-sample", "held-out"):
            for fold, label in enumerate(FOLDS):
                print(_row(name, protocol, label, _tally(j for j in mine if j[0] == fold and j[1] == protocol)))
            print(_row(name, protocol, "A+B", _tally(j for j in mine if j[1] == protocol)))
    print("\nper rule, held out, folds A+B pooled (a session counts for a rule when that rule alone would count it):")
    print(f"{'rule':<34} {'recall':<24} {'benign paged':<24} {'benign held':<24}")
    held_out = [j for j in judged if j[1] == "held-out"]
    for rule in sorted({f.rule for j in judged for f in j[3]}):
        t = _tally(held_out, rule)
        print(f"{rule:<34} {t.caught!s:<24} {t.paged!s:<24} {t.held!s:<24}")
    print("\nnot in the recall figures:")
    for name in CONVERTERS:
        reach = attacks[name, "out_of_reach"]
        notes = sorted({sc.note for sc in scenarios if sc.dataset == name and sc.attack != "tool_call" and sc.note})
        print(f"  {name:<24} out of reach for a tool-call monitor: {reach:>2}; not converted: "
              f"{attacks[name, 'not_converted']}; no attack (clean or control): {attacks[name, 'none']}"
              + (f"  ({'; '.join(notes)})" if notes else ""))
    return 0
