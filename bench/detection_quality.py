"""Recall and false-alert rate per rule on the labelled sessions (tests/data/sessions) with the bundled matrix.

    .venv/bin/python bench/detection_quality.py

The same replay and scoring as tests/test_sessions.py, printed as the table docs/replay.md and the closing note
quote. Routed findings only: a shadow rule never alerts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.session_quality import labels, replay_sessions, score


def main() -> None:
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
