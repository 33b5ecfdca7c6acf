"""`warden replay`: backtest a policy on recorded events, offline, before it is enforced."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from streams.backtest import Backtest, backtest
from streams.ingest import FORMATS
from warden.contract.findings import Finding
from warden.policy import PolicyError
from warden.runtime.catalogue import load


def finding_line(f: Finding) -> dict[str, Any]:
    """One finding as `--json` prints it: a flat object whose keys are always in the same order."""
    return {
        "event_id": f.event_id, "rule": f.rule, "severity": f.severity.value, "shadow": f.shadow,
        "tier": f.tier.value, "approval_tier": f.approval_tier.value, "ts": f.ts.isoformat(), "agent": f.agent_id,
        "workflow": f.workflow, "session_id": f.session_id,
        "target": f.target, "title": f.title, "evidence": f.evidence,
    }


def tier_label(f: Finding) -> str:
    """`page`, or `review (hold when asked first)`: the tier, and the approval path's when it differs."""
    if f.approval_tier is f.tier:
        return f.tier.value
    return f"{f.tier.value} ({f.approval_tier.value} when asked first)"


def _print(result: Backtest, as_json: bool) -> None:
    if as_json:
        for f in result.findings:
            click.echo(json.dumps(finding_line(f), ensure_ascii=False))
        click.echo(json.dumps({"summary": {
            "events": result.events, "findings": len(result.findings), "invalid": len(result.invalid),
            "by_rule": [{"rule": r, "severity": s, "shadow": sh, "count": n} for r, s, sh, n in result.summary()],
        }}))
        for bad in result.invalid:
            click.echo(json.dumps({"invalid": {"where": bad.where, "reason": bad.reason}}, ensure_ascii=False))
        for rule, t in result.rule_errors.items():
            click.echo(json.dumps({"rule_error": {"rule": rule, "count": t.count, "first_event": t.first_event,
                                                  "error": t.error}}, ensure_ascii=False))
        return
    for f in result.findings:
        shadow = " shadow" if f.shadow else ""
        click.echo(f"{f.event_id}: {f.rule} [{f.severity.value}{shadow}] {tier_label(f)} {f.agent_id} "
                   f"({f.workflow or 'no workflow'}) session {f.session_id or '-'} on {f.target}")
    click.echo(f"summary: {result.events} events, {len(result.findings)} findings, {len(result.invalid)} invalid")
    for rule, severity, in_shadow, n in result.summary():
        click.echo(f"  {rule} [{severity}{' shadow' if in_shadow else ''}]: {n}")
    for bad in result.invalid:
        click.echo(f"invalid: {bad.where}: {bad.reason}")
    for rule, t in result.rule_errors.items():
        click.echo(f"rule error: {rule}: {t.count} event(s) could not be judged, first {t.first_event}: {t.error}")


@click.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--policy", "policy_path", required=True, type=click.Path(path_type=Path),
              help="The matrix to try: a YAML file or a folder of them.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="native", show_default=True,
              help="Ingest format of EVENTS.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: findings, the summary, invalid.")
def replay(events: Path, policy_path: Path, fmt: str, as_json: bool) -> None:
    """Run the detectors over recorded EVENTS (JSON Lines, or a JSON array) with the policy at --policy, offline.

    Event time drives the windows; invalid events are reported and skipped. The same input gives the same output.
    """
    try:
        live = load(policy_path)
    except PolicyError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        sys.exit(2)
    _print(backtest(events.read_bytes(), live, fmt), as_json)
