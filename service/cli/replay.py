"""`warden replay`: backtest a policy on recorded events, offline, before it is enforced."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from service.cli.exits import Exit
from service.cli.failure import Failure
from service.cli.output import Output, finding_line, line, output_option
from service.cli.replay_compare import compare
from service.runtime.catalogue import load
from streams.backtest import DEFAULT_RECORD_BYTES, Backtest, FramingError, backtest
from streams.compare import read_labels
from streams.ingest import FORMATS
from warden.contract.findings import Finding
from warden.policy import Policy, PolicyError


def tier_label(f: Finding) -> str:
    """`page`, or `review (hold when asked first)`: the tier, and the approval path's when it differs."""
    if f.approval_tier is f.tier:
        return f.tier.value
    return f"{f.tier.value} ({f.approval_tier.value} when asked first)"


def _print(result: Backtest, output: Output, source: str) -> None:
    summary = {
        "events": result.events, "findings": len(result.findings), "invalid": len(result.invalid),
        "routed": sum(not f.shadow for f in result.findings), "source": source,
        "by_rule": [{"rule": r, "severity": s, "shadow": sh, "count": n} for r, s, sh, n in result.summary()],
    }
    invalid = [{"where": bad.where, "reason": bad.reason} for bad in result.invalid]
    rule_errors: list[dict[str, object]] = [
        {"rule": rule, "count": t.count, "first_event": t.first_event, "error": t.error}
        for rule, t in result.rule_errors.items()
    ]
    if output == "json":
        click.echo(line({"findings": [finding_line(f) for f in result.findings], "summary": summary,
                         "invalid": invalid, "rule_errors": rule_errors}))
        return
    if output == "jsonl":
        for f in result.findings:
            click.echo(line(finding_line(f)))
        click.echo(line({"summary": summary}))
        for entry in invalid:
            click.echo(line({"invalid": entry}))
        for tally in rule_errors:
            click.echo(line({"rule_error": tally}))
        return
    for f in result.findings:
        shadow = " shadow" if f.shadow else ""
        click.echo(f"{f.event_id}: {f.rule} [{f.severity.value}{shadow}] {tier_label(f)} {f.agent_id} "
                   f"({f.workflow or 'no workflow'}) session {f.session_id or '-'} on {f.target}")
    click.echo(f"summary: {result.events} events, {len(result.findings)} findings, {len(result.invalid)} invalid "
               f"({source})")
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
              help="Ingest format of EVENTS: native, otlp_json and otlp_logs_json are JSON (one document, or JSON "
                   "Lines); otlp_proto and otlp_logs_proto are length-delimited (a 4-byte big-endian length before "
                   "each TracesData or LogsData).")
@click.option("--max-bytes", type=click.IntRange(min=1024), default=DEFAULT_RECORD_BYTES, show_default=True,
              envvar="WARDEN_MAX_MESSAGE_BYTES", help="Largest line, frame or single event, as the worker's "
              "WARDEN_MAX_MESSAGE_BYTES (a whole-file JSON array may be up to 64 MiB).")
@click.option("--against", "old_path", type=click.Path(path_type=Path),
              help="The current matrix: print the findings that appear and disappear from it to --policy.")
@click.option("--labels", "labels_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --against: a JSON object of session (or event) ids to \"benign\" or \"hijacked\"; prints "
                   "precision and recall of both policies.")
@click.option("--as-enforced", is_flag=True,
              help="With --labels: count the new policy's shadow findings as if enforced (a learned draft is in "
                   "shadow mode).")
@output_option("jsonl")
def replay(*, events: Path, policy_path: Path, fmt: str, max_bytes: int, old_path: Path | None,
           labels_path: Path | None, as_enforced: bool, output: Output) -> None:
    """Run the detectors over recorded EVENTS with the policy at --policy, offline.

    Event time drives the windows; invalid events are reported and skipped, decoded as strictly as the worker
    does. The same input gives the same output. Exit 0: no routed finding; 1: findings (shadow ones do not count);
    2: EVENTS cannot be read or holds no valid event; 3: the policy does not load.

    With --against OLD: the changes from OLD. Exit 1 when a routed finding appears or disappears; with --labels,
    exit 1 when the new policy alerts on a session labelled benign, or misses one labelled hijacked, that OLD
    handled (0 otherwise).
    """
    if (labels_path or as_enforced) and old_path is None:
        raise Failure("--labels and --as-enforced compare two policies: give the current one with --against",
                      Exit.INVALID_INPUT)
    live = _load(policy_path)
    old = _load(old_path) if old_path is not None else None
    labels = _labels(labels_path) if labels_path is not None else None
    try:
        data = events.read_bytes()
    except OSError as exc:
        raise Failure(f"{events}: {exc.strerror or exc}", Exit.INVALID_INPUT) from None
    progress = _progress(events, len(data), output)
    try:
        result = backtest(data, live, fmt, max_bytes, on_record=progress)
    except FramingError as exc:
        raise Failure(f"{events}: not {fmt}: {exc}", Exit.INVALID_INPUT) from None
    if result.events == 0 and result.invalid:
        _print(result, output, f"{events} ({fmt}), policy {live.sha256[:12]}")
        click.echo(f"warden: {events}: no valid event ({len(result.invalid)} invalid)", err=True)
        sys.exit(Exit.INVALID_INPUT)
    if old is not None:

        before = backtest(data, old, fmt, max_bytes)
        source = f"{events} ({fmt}), policy {live.sha256[:12]} against {old.sha256[:12]}"
        sys.exit(compare(result, before, labels, output=output, source=source, as_enforced=as_enforced))
    _print(result, output, f"{events} ({fmt}), policy {live.sha256[:12]}")
    sys.exit(Exit.FOUND if any(not f.shadow for f in result.findings) else Exit.OK)


def _load(path: Path) -> Policy:
    try:
        return load(path)
    except PolicyError as exc:
        for issue in exc.issues:
            click.echo(f"warden: policy error: {path}: {issue}", err=True)
        sys.exit(Exit.POLICY_ERROR)


def _labels(path: Path) -> dict[str, str]:
    try:
        return read_labels(json.loads(path.read_bytes()))
    except (OSError, ValueError, RecursionError) as exc:
        raise Failure(f"{path}: not a labels file: {exc}", Exit.INVALID_INPUT) from None


def _progress(events: Path, size: int, output: Output) -> Callable[[int], None] | None:
    """Every 10,000 records, a line on standard error when it is a terminal (a long replay is not a hang)."""
    if size < 1 << 20 or not sys.stderr.isatty():
        return None

    def report(n: int) -> None:
        if n % 10_000 == 0:
            click.echo(f"warden: {events}: {n} records read", err=True)

    return report
