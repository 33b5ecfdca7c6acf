"""Recall and false-alert rate per rule on the labelled sessions (tests/support/data/sessions) with the bundled matrix,
or
with --third-party on public data sets no one here wrote, under a holdout protocol.

    .venv/bin/python bench/detection_quality.py
    .venv/bin/pip install --no-deps inspect-evals==0.26.0 agent-injection-bench==0.1.0
    .venv/bin/python bench/detection_quality.py --third-party
    .venv/bin/python bench/detection_quality.py --third-party --learned   # `warden policy learn` vs the author

The first is the same replay and scoring as tests/unit/streams/test_sessions.py (in-sample: the set was written with
the bundled
matrix). The second converts each third-party scenario into a benign and a hijacked session, writes a policy from
half of the benign sessions, and judges both halves (bench/third_party, docs/replay.md). Pages count (and, for the
third-party sets, holds on the approval path): a shadow rule never alerts, and a finding kept for review or the log
pages nobody.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.session_quality import labels, replay_sessions, score


def main() -> None:
    if sys.argv[1:2] == ["--third-party"] and sys.argv[2:] in ([], ["--learned"]):
        from bench.third_party.report import main as third_party

        sys.exit(third_party(compare_learned=sys.argv[2:] == ["--learned"]))
    if sys.argv[1:]:
        sys.exit(f"usage: {sys.argv[0]} [--third-party [--learned]]")
    truth = labels()
    fired, invalid = replay_sessions()
    hijacked = [s for s, v in truth.items() if v["verdict"] == "hijacked"]
    benign = [s for s, v in truth.items() if v["verdict"] == "benign"]
    print(f"{len(hijacked)} hijacked, {len(benign)} benign sessions; {invalid} invalid events")
    print(f"{'rule':<28} {'caught':>8} {'recall':>7} {'alerted':>8} {'false-alert':>11}")
    for s in score(truth, fired):
        print(f"{s.rule:<28} {s.caught:>3}/{s.expected:<4} {s.recall:>7.1%} {s.false_alerts:>3}/{s.benign:<4} "
              f"{s.false_alert_rate:>11.1%}")
    caught = sum(1 for s in hijacked if fired.get(s))
    alerted = sum(1 for s in benign if fired.get(s))
    print(f"{'any rule, per session':<28} {caught:>3}/{len(hijacked):<4} {caught / len(hijacked):>7.1%} "
          f"{alerted:>3}/{len(benign):<4} {alerted / len(benign):>11.1%}")


if __name__ == "__main__":
    main()
