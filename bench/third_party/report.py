"""The third-party table: convert, split, author a policy per fold, judge, and print every rate with its bounds."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable

from bench.third_party import author, datasets, learned
from bench.third_party.convert import CONVERTERS, Scenario, Session, sessions
from bench.third_party.score import Tally, enforced, halves
from warden.contract.findings import Finding
from warden.policy import Policy

FOLDS = ("A", "B")  # fold A: policy from half 0, judged on half 1 (held out); fold B the other way round


def _row(label: str, protocol: str, fold: str, t: Tally) -> str:
    return f"{label:<24} {protocol:<10} {fold:<5} {t.caught!s:<24} {t.paged!s:<24} {t.held!s:<24}"


def _judged(all_sessions: list[Session], write: Callable[[list[Session]], Policy] = author.policy
            ) -> list[tuple[int, str, Session, list[Finding]]]:
    """(fold, protocol, session, enforced findings) for both folds, the policy of each written by `write`."""
    half = halves(all_sessions)
    out = []
    for fold in (0, 1):
        training = [s for s in all_sessions
                    if not s.hijacked and half[s.scenario.dataset, s.scenario.scenario_id] == fold]
        policy = write(training)
        for s in all_sessions:
            protocol = "in-sample" if half[s.scenario.dataset, s.scenario.scenario_id] == fold else "held-out"
            out.append((fold, protocol, s, enforced(s, policy)))
    return out


def _tally(rows: Iterable[tuple[int, str, Session, list[Finding]]], rule: str | None = None) -> Tally:
    t = Tally()
    for _, _, s, findings in rows:
        t.add(s, findings, rule)
    return t


def main(compare_learned: bool = False) -> int:
    try:
        records = {name: datasets.read(name) for name in CONVERTERS}
    except datasets.MissingDataSet as exc:
        print(exc, file=sys.stderr)
        return 2
    scenarios: list[Scenario] = [CONVERTERS[name](r) for name, rs in records.items() for r in rs]
    all_sessions = [s for sc in scenarios for s in sessions(sc)]
    judged = _judged(all_sessions)
    if compare_learned:
        _compare({"author": judged, "learned": _judged(all_sessions, learned.policy),
                  "learned, no catalogue": _judged(all_sessions, learned.without_catalogue)})
        return 0
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


def _compare(by_policy: dict[str, list[tuple[int, str, Session, list[Finding]]]]) -> None:
    """The hand-written author next to `warden policy learn`, folds A+B pooled, with the learned draft enforced."""
    print("hand-written author (bench/third_party/author.py) vs `warden policy learn` (bench/third_party/learned.py),\n"
          "each written from the benign sessions of one half; folds A+B pooled. The learned draft is judged as it\n"
          "would be enforced: its rules are drafted in shadow mode, and a shadow rule never alerts, so they are\n"
          "flipped to enforce for this measurement. recall: hijacked sessions with a page or a hold on an injected\n"
          "call. 95% Wilson bounds. Both start from the same current matrix: owners, one workflow per data set, and\n"
          "the catalogue read from the benchmarks' tool definitions (author.TOOLS; Warden's shipped catalogue knows\n"
          "none of these tools); `learned, no catalogue` starts without it.")
    print(f"{'policy':<22} {'data set':<24} {'protocol':<10} {'recall':<24} {'benign paged':<24} "
          f"{'benign paged or held':<24}")
    for label, judged in by_policy.items():
        for name in [*CONVERTERS, "all"]:
            for protocol in ("in-sample", "held-out"):
                if name != "all" and protocol == "in-sample":
                    continue
                t = _tally(j for j in judged if j[1] == protocol and name in ("all", j[2].scenario.dataset))
                print(f"{label:<22} {name:<24} {protocol:<10} {t.caught!s:<24} {t.paged!s:<24} "
                      f"{t.paged_or_held!s:<24}")
    print("\nlearned, per rule, held out (a session counts for a rule when that rule alone would count it):")
    held_out = [j for j in by_policy["learned"] if j[1] == "held-out"]
    for rule in sorted({f.rule for j in by_policy["learned"] for f in j[3]}):
        t = _tally(held_out, rule)
        print(f"  {rule:<32} recall {t.caught!s:<22} paged {t.paged!s:<22} paged or held {t.paged_or_held!s}")
