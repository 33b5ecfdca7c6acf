"""What the dashboard and the alert rules ask Prometheus for: every expression parsed (promql-parser) and the
Warden metric names it reads, so tests can hold them against what Warden defines and what it served."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "warden.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
_NAME = re.compile(r"\b(warden_[a-z0-9_]+)")
_SUFFIXES = ("_bucket", "_count", "_sum")


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def names_in(expr: str) -> set[str]:
    """The Warden series names an expression reads, after checking that it parses (raises if not)."""
    promql_parser.parse(expr)
    return set(_NAME.findall(expr))


def family(name: str) -> str:
    """A series name's metric family: `x_bucket` → `x`; counters are named with their `_total`."""
    return next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)


def served_names(exposition: str) -> set[str]:
    """Every sample name in a /metrics text."""
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}
