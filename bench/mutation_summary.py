"""Per-module totals of a pytest-gremlins JSON report: total, killed, survived (and each survivor, to classify)."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_of(path: str) -> str:
    """Group a file under its package for streams/ingest and streams/detectors, else the file itself."""
    rel = Path(path).resolve().relative_to(ROOT).as_posix()
    for package in ("streams/ingest", "streams/detectors"):
        if rel.startswith(package + "/"):
            return package
    return rel


def main(report: str) -> None:
    results = json.loads(Path(report).read_text())["results"]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: list[str] = []
    for r in results:
        module = module_of(r["file_path"])
        counts[module][r["status"]] += 1
        if r["status"] != "zapped":
            rel = Path(r["file_path"]).resolve().relative_to(ROOT).as_posix()
            survivors.append(f"  {r['status']:9} {rel}:{r['line_number']}  {r['description']}  ({r['gremlin_id']})")
    print(f"{'module':32} {'total':>6} {'killed':>7} {'other':>6}  kill rate")
    for module, c in sorted(counts.items()):
        total, killed = sum(c.values()), c["zapped"]
        print(f"{module:32} {total:6} {killed:7} {total - killed:6}  {killed / total:6.1%}")
    print("not killed:")
    print("\n".join(survivors) or "  none")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "coverage/gremlins/gremlins.json"))
