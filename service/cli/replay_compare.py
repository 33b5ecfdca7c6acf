"""`warden replay --against OLD [--labels FILE]`: print what changes from OLD to the new policy, and exit so CI can
gate a promotion on it (docs/replay.md, "What changes")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from service.cli.exits import Exit
from service.cli.output import Output, finding_line, line
from service.cli.policy_output import shown
from streams.backtest import Backtest
from streams.compare import Diff, Regressions, Score, diff, regressions, score


def compare(new: Backtest, old: Backtest, labels: Mapping[str, str] | None, *, output: Output, source: str,
            as_enforced: bool) -> Exit:
    """Print the changes (and the labelled scores) and return the exit code: with labels, FOUND when the new policy
    alerts on a benign unit the old did not, or misses a hijacked unit the old caught; without, FOUND when a routed
    finding appears or disappears."""
    changes = diff(old.findings, new.findings)
    scores: tuple[Score, Score] | None = None
    worse: Regressions | None = None
    if labels is not None:
        scores = score(labels, old.findings), score(labels, new.findings, shadow_counts=as_enforced)
        worse = regressions(labels, *scores)
    summary: dict[str, Any] = {
        "source": source, "events": new.events, "invalid": len(new.invalid), "as_enforced": as_enforced,
        "appeared": len(changes.appeared), "disappeared": len(changes.disappeared),
        "by_rule": [{"rule": r, "workflow": w, "appeared": up, "disappeared": down}
                    for r, w, up, down in changes.by_rule()],
    }
    if scores is not None and worse is not None:
        summary["labels"] = {"old": scores[0].as_dict(), "new": scores[1].as_dict(),
                             "new_false_alerts": worse.new_false_alerts, "new_misses": worse.new_misses}
    _print(changes, summary, output)
    if worse is not None:
        return Exit.FOUND if worse else Exit.OK
    routed = [f for f in (*changes.appeared, *changes.disappeared) if not f.shadow]
    return Exit.FOUND if routed else Exit.OK


def _print(changes: Diff, summary: dict[str, Any], output: Output) -> None:
    if output == "json":
        click.echo(line({"appeared": [finding_line(f) for f in changes.appeared],
                         "disappeared": [finding_line(f) for f in changes.disappeared], "summary": summary}))
        return
    if output == "jsonl":
        for sign, found in (("+", changes.appeared), ("-", changes.disappeared)):
            for f in found:
                click.echo(line({"change": sign, **finding_line(f)}))
        click.echo(line({"summary": summary}))
        return
    for sign, found in (("+", changes.appeared), ("-", changes.disappeared)):
        for f in found:
            shadow = " shadow" if f.shadow else ""
            click.echo(f"{sign} {shown(f.event_id)}: {f.rule} [{f.severity.value}{shadow}] {f.tier.value} "
                       f"({shown(f.workflow or 'no workflow')}) session {shown(f.session_id or '-')} on "
                       f"{shown(f.target)}")
    click.echo(f"changes: {summary['appeared']} finding(s) appear, {summary['disappeared']} disappear "
               f"({summary['source']})")
    for entry in summary["by_rule"]:
        click.echo(f"  {entry['rule']} ({shown(entry['workflow'] or 'no workflow')}): +{entry['appeared']} "
                   f"-{entry['disappeared']}")
    labelled = summary.get("labels")
    if labelled is None:
        return
    note = " (shadow findings counted as enforced)" if summary["as_enforced"] else ""
    for name in ("old", "new"):
        s = labelled[name]
        precision = _rate(s["caught"], s["caught"] + s["false_alerts"])
        click.echo(f"{name}{note if name == 'new' else ''}: precision {precision}, recall "
                   f"{_rate(s['caught'], s['hijacked'])}; {s['false_alerts']}/{s['benign']} benign alerted")
    for what, units in (("new alerts on benign", labelled["new_false_alerts"]),
                        ("new misses hijacked the old caught", labelled["new_misses"])):
        if units:
            click.echo(f"regression: {what}: " + ", ".join(shown(u) for u in units))


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} {k / n:.0%}" if n else "-"
