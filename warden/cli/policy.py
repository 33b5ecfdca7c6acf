"""`warden policy lint|test`: check a matrix before it ships, and see which findings an event would raise."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import TypeAdapter, ValidationError

from streams.detectors import DetectorState, detect
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding, OwnerRef
from warden.policy import Policy, PolicyError, PolicyIssue
from warden.runtime.catalogue import load

_EVENTS = TypeAdapter(list[ActivityEvent])


@click.group()
def policy() -> None:
    """Check and try out an ownership matrix (a YAML file or a folder of them)."""


def lint_policy(path: Path) -> tuple[Policy | None, list[PolicyIssue]]:
    """The loaded policy (None when it has errors) and every located error and warning."""
    try:
        loaded = load(path)
    except PolicyError as exc:
        return None, exc.issues + exc.warnings
    return loaded, list(loaded.warnings)


@policy.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lint(path: Path, as_json: bool) -> None:
    """Validate the matrix at PATH; exit 1 if it has errors. Each issue names its file, path and reason."""
    loaded, issues = lint_policy(path)
    errors = sum(1 for i in issues if i.level == "error")
    warnings = len(issues) - errors
    if as_json:
        click.echo(json.dumps({
            "path": str(path),
            "ok": loaded is not None,
            "sha256": loaded.sha256 if loaded else None,
            "errors": errors,
            "warnings": warnings,
            "issues": [i.as_dict() for i in issues],
        }, indent=2))
    else:
        for issue in issues:
            click.echo(f"{issue.level}: {issue}")
        if loaded is None:
            click.echo(f"FAILED: {errors} error(s), {warnings} warning(s)")
        else:
            m = loaded.matrix
            click.echo(f"OK: {len(m.workflows)} workflows, {len(m.owners)} owners, {len(m.rules.custom)} custom "
                       f"rules, {warnings} warning(s); sha256 {loaded.sha256}")
    sys.exit(0 if loaded is not None else 1)


def read_events(path: Path) -> list[ActivityEvent]:
    """One JSON object, a JSON array of them, or JSON Lines (each line an object or an array)."""
    text = path.read_text("utf-8")
    try:
        docs: list[Any] = [json.loads(text)]
    except ValueError:
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"line {n}: {exc}") from None
    return _EVENTS.validate_python([e for d in docs for e in (d if isinstance(d, list) else [d])])


def _owner(ref: OwnerRef | None) -> dict[str, Any] | None:
    return ref.model_dump(include={"id", "name", "contacts"}) if ref else None


def route(finding: Finding) -> dict[str, Any]:
    """Where a finding would go: its responder and approver, or nowhere when its rule is in shadow mode."""
    owners = finding.owners
    return {
        "rule": finding.rule,
        "severity": finding.severity.value,
        "shadow": finding.shadow,
        "tier": finding.tier.value,
        "approval_tier": finding.approval_tier.value,
        "routed_to": None if finding.shadow else owners.responder.id,
        "workflow": finding.workflow,
        "target": finding.target,
        "frameworks": finding.frameworks,
        "responder": _owner(owners.responder),
        "approver": _owner(owners.approver),
        "escalation": [
            {"owner": s.owner.id, "ack_timeout_s": s.ack_timeout.total_seconds()} for s in owners.escalation
        ],
    }


def _describe(r: dict[str, Any]) -> str:
    who = r["responder"]
    contacts = ", ".join(f"{notifier} {address}" for notifier, address in who["contacts"].items()) or "no contact"
    where = f"{who['id']} ({who['name'] or '?'}, {contacts})"
    tier = r["tier"] if r["tier"] == r["approval_tier"] else f"{r['tier']} ({r['approval_tier']} when asked first)"
    routed = "shadow: recorded, not routed" if r["shadow"] else f"{tier} -> {where}"
    approver = r["approver"]["id"] if r["approver"] else "-"
    chain = " > ".join(f"{s['owner']}({s['ack_timeout_s'] / 60:g}m)" for s in r["escalation"]) or "-"
    return f"{r['rule']} [{r['severity']}] {routed}; approver {approver}; escalation {chain}"


@policy.command(name="test")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def test_events(path: Path, events: Path, as_json: bool) -> None:
    """Run EVENTS (JSON object, array or JSONL) through the matrix at PATH, in order, with fresh state."""
    try:
        live = load(path)
    except PolicyError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        sys.exit(2)
    try:
        parsed = read_events(events)
    except (ValueError, ValidationError) as exc:
        raise click.ClickException(f"{events}: not valid native events: {exc}") from None
    state = DetectorState()
    results: list[dict[str, Any]] = [
        {"event_id": ev.event_id, "findings": [route(f) for f in detect(ev, live, state)]} for ev in parsed
    ]
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for result in results:
        if not result["findings"]:
            click.echo(f"{result['event_id']}: no findings")
        for r in result["findings"]:
            click.echo(f"{result['event_id']}: {_describe(r)}")
