"""Per-module totals of a pytest-gremlins JSON report (killed, survived, equivalent, kill rate of the
non-equivalent), and each survivor not listed as equivalent in bench/mutation_equivalents.txt, to classify.

A survivor listed in bench/mutation_killed_elsewhere.txt is killed by a test the pure run cannot include (it needs
PostgreSQL): it counts as killed, and the table says how many were."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.txt"
KILLED_ELSEWHERE = Path(__file__).resolve().parent / "mutation_killed_elsewhere.txt"
# A gremlin whose tests ran past the time limit was caught (the mutant hangs), as in mutmut and Stryker.
KILLED = {"zapped", "timeout"}


def module_of(rel: str) -> str:
    """Group a file under its package for streams/ingest, streams/detectors and playbooks/actions, else the file
    itself."""
    for package in ("streams/ingest", "streams/detectors", "playbooks/actions"):
        if rel.startswith(package + "/"):
            return package
    return rel


def equivalents(path: Path = EQUIVALENTS) -> dict[tuple[str, int, str], str]:
    """`path:line | description | why` (why it changes nothing observable, or the test that kills it), one per
    line; `#` starts a comment line."""
    out: dict[tuple[str, int, str], str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        where, description, reason = (part.strip() for part in line.split(" | ", 2))
        file, _, number = where.rpartition(":")
        out[(file, int(number), description)] = reason
    return out


def main(reports: list[str]) -> None:
    """One table over one or more reports (runs of different modules, e.g. one per module on a busy machine)."""
    results = [r for report in reports for r in json.loads(Path(report).read_text())["results"]]
    known, elsewhere = equivalents(), equivalents(KILLED_ELSEWHERE)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: list[str] = []
    for r in results:
        rel = Path(r["file_path"]).resolve().relative_to(ROOT).as_posix()
        module = module_of(rel)
        status = r["status"]
        if status not in KILLED and (rel, r["line_number"], r["description"]) in known:
            status = "equivalent"
        elif status not in KILLED and (rel, r["line_number"], r["description"]) in elsewhere:
            status = "elsewhere"
        counts[module][status] += 1
        if status not in KILLED | {"equivalent", "elsewhere"}:
            survivors.append(f"  {status:9} {rel}:{r['line_number']} | {r['description']}  ({r['gremlin_id']})")
    print(f"{'module':34} {'total':>6} {'killed':>7} {'survived':>9} {'equivalent':>11}  killed of non-equivalent")
    overall: Counter[str] = sum(counts.values(), Counter())
    for module, c in [*sorted(counts.items()), ("all modules above", overall)]:
        total, equivalent = sum(c.values()), c["equivalent"]
        killed = c["zapped"] + c["timeout"] + c["elsewhere"]
        rate = f"{killed / (total - equivalent):6.1%}" if total > equivalent else "   n/a"
        print(f"{module:34} {total:6} {killed:7} {total - killed - equivalent:9} {equivalent:11}  {rate}"
              + (f"  ({c['timeout']} by timeout)" if c["timeout"] else "")
              + (f"  ({c['elsewhere']} by PostgreSQL tests)" if c["elsewhere"] else ""))
    print("not killed, not equivalent:")
    print("\n".join(survivors) or "  none")


if __name__ == "__main__":
    main(sys.argv[1:] or [str(ROOT / "coverage/gremlins/gremlins.json")])
