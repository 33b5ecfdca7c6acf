"""`warden policy test`: run an expectation file (pass/fail per case, rule coverage) or an events file (each event's
findings and where they would be routed) through the worker's decoder and detectors, and print the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from service.cli.exits import Exit
from service.cli.policy_output import emit_json, emit_jsonl, shown
from service.runtime.settings import Settings
from streams.cases import CaseResult, CasesError, Run, observed, read_cases, run_cases
from streams.detectors import DetectorState, detect
from streams.detectors.custom import RuleErrorTally
from streams.ingest import native
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding, OwnerRef
from warden.policy import Policy

# The worker dead-letters a larger message; a case or a line of an events file is one message.
MAX_EVENT_BYTES: int = Settings.model_fields["max_message_bytes"].default
# A file that is one JSON document (an array of events) stands for many messages.
MAX_DOCUMENT_BYTES = 64 << 20


def _owner(ref: OwnerRef | None) -> dict[str, Any] | None:
    return ref.model_dump(include={"id", "name", "contacts"}) if ref else None


def route(finding: Finding) -> dict[str, Any]:
    """Where a finding would go: its responder and approver, or nowhere when its rule is in shadow mode."""
    owners = finding.owners
    return {
        "event_id": finding.event_id,
        "rule": finding.rule,
        "severity": finding.severity.value,
        "shadow": finding.shadow,
        "tier": finding.tier.value,
        "approval_tier": finding.approval_tier.value,
        "routed_to": None if finding.shadow else owners.responder.id,
        "workflow": finding.workflow,
        "target": finding.target,
        "frameworks": finding.frameworks,
        "playbooks": [p.playbook for p in finding.containment],
        "responder": _owner(owners.responder),
        "approver": _owner(owners.approver),
        "escalation": [
            {"owner": s.owner.id, "ack_timeout_s": s.ack_timeout.total_seconds()} for s in owners.escalation
        ],
    }


def describe(r: dict[str, Any]) -> str:
    """One finding's route as a line of text."""
    who = r["responder"]
    contacts = ", ".join(f"{notifier} {address}" for notifier, address in who["contacts"].items()) or "no contact"
    where = f"{who['id']} ({who['name'] or '?'}, {contacts})"
    tier = r["tier"] if r["tier"] == r["approval_tier"] else f"{r['tier']} ({r['approval_tier']} when asked first)"
    routed = "shadow: recorded, not routed" if r["shadow"] else f"{tier} -> {where}"
    approver = r["approver"]["id"] if r["approver"] else "-"
    chain = " > ".join(f"{s['owner']}({s['ack_timeout_s'] / 60:g}m)" for s in r["escalation"]) or "-"
    playbooks = f"; playbooks {', '.join(r['playbooks'])}" if r["playbooks"] else ""
    return f"{r['rule']} [{r['severity']}] {routed}; approver {approver}; escalation {chain}{playbooks}"


def _rule_errors(tallies: dict[str, RuleErrorTally]) -> list[dict[str, Any]]:
    return [{"rule": rule, "count": t.count, "first_event": t.first_event, "error": t.error}
            for rule, t in sorted(tallies.items())]


def _echo_rule_errors(errors: list[dict[str, Any]]) -> None:
    for e in errors:
        click.echo(f"rule error: {e['rule']}: {e['count']} event(s) could not be judged, first "
                   f"{shown(e['first_event'])}: {shown(e['error'])}")


# --- expectation files -------------------------------------------------------------------------------------------


def test_cases(policy: Policy, path: Path, fmt: str) -> Exit:
    """Run CASES.yaml; FOUND when a case failed."""
    try:
        cases = read_cases(path.read_bytes(), MAX_EVENT_BYTES)
    except (CasesError, OSError) as exc:
        for problem in exc.problems if isinstance(exc, CasesError) else [str(exc)]:
            click.echo(f"error: {path}: {problem}", err=True)
        return Exit.INVALID_INPUT
    run = run_cases(cases, policy)
    _print_run(run, fmt)
    return Exit.FOUND if run.failed else Exit.OK


def _case(result: CaseResult) -> dict[str, Any]:
    return {"name": result.name, "passed": result.passed,
            "findings": [route(f) for f in result.findings],
            "missing": [e.model_dump(mode="json", exclude_none=True) for e in result.missing],
            "unexpected": [_seen(f) for f in result.unexpected]}


def _seen(f: Finding) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in observed(f).items()}


def _print_run(run: Run, fmt: str) -> None:
    summary = {"cases": len(run.results), "passed": len(run.results) - run.failed, "failed": run.failed,
               "rules": len(run.rules), "exercised": len([r for r in run.rules if r in run.exercised]),
               "not_exercised": run.not_exercised}
    errors = _rule_errors(run.rule_errors)
    if fmt == "json":
        emit_json({"cases": [_case(r) for r in run.results], "rule_errors": errors, "summary": summary})
        return
    if fmt == "jsonl":
        emit_jsonl([*({"case": _case(r)} for r in run.results), *({"rule_error": e} for e in errors),
                    {"summary": summary}])
        return
    for result in run.results:
        click.echo(f"{'PASS' if result.passed else 'FAIL'}: {result.name}")
        for want in result.missing:
            click.echo(f"  missing: {want}")
        for f in result.unexpected:
            click.echo(f"  unexpected: rule={f.rule} event_id={shown(f.event_id)} severity={f.severity.value} "
                       f"tier={f.tier.value} responder={f.owners.responder.id} target={shown(f.target)}")
    _echo_rule_errors(errors)
    click.echo(f"coverage: {summary['exercised']}/{summary['rules']} rules exercised"
               + (f"; not exercised: {', '.join(run.not_exercised)}" if run.not_exercised else ""))
    click.echo(f"{'FAILED' if run.failed else 'OK'}: {summary['passed']}/{summary['cases']} case(s) passed")


# --- events files ------------------------------------------------------------------------------------------------


def read_events(data: bytes) -> tuple[list[ActivityEvent], list[str]]:
    """One JSON document (an object or an array) or JSON Lines, decoded by the worker's strict decoder; the events
    and the located reasons of the invalid ones."""
    whole = native.decode(data, MAX_DOCUMENT_BYTES)
    lines = [(n, line) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
    as_lines = (whole.rejections and len(lines) > 1  # JSON Lines: every line opens an object or an array
                and all(line.lstrip()[:1] in (b"{", b"[") for _, line in lines))
    if not as_lines:
        return whole.events, [_where("file", r.index) + f"{r.code}: {r.reason}" for r in whole.rejections]
    events: list[ActivityEvent] = []
    problems: list[str] = []
    for n, line in lines:
        decoded = native.decode(line, MAX_EVENT_BYTES)
        events += decoded.events
        problems += [_where(f"line {n}", r.index) + f"{r.code}: {r.reason}" for r in decoded.rejections]
    return events, problems


def _where(at: str, index: int | None) -> str:
    return f"{at}: " if index is None else f"{at}, element {index}: "


def test_events(policy: Policy, path: Path, fmt: str) -> Exit:
    """Run an events file in order with fresh state; INVALID_INPUT if any event is invalid, FOUND on findings."""
    try:
        events, problems = read_events(path.read_bytes())
    except OSError as exc:
        problems, events = [str(exc)], []
    if problems:
        for problem in problems:
            click.echo(f"error: {path}: not valid native events: {shown(problem)}", err=True)
        return Exit.INVALID_INPUT
    state = DetectorState()
    results: list[dict[str, Any]] = [
        {"event_id": ev.event_id, "findings": [route(f) for f in detect(ev, policy, state)]} for ev in events]
    errors = _rule_errors(state.rule_errors.by_rule)
    found = sum(len(r["findings"]) for r in results)
    summary = {"events": len(results), "findings": found}
    if fmt == "json":
        emit_json({"events": results, "rule_errors": errors, "summary": summary})
    elif fmt == "jsonl":
        emit_jsonl([*results, *({"rule_error": e} for e in errors), {"summary": summary}])
    else:
        for result in results:
            if not result["findings"]:
                click.echo(f"{shown(result['event_id'])}: no findings")
            for r in result["findings"]:
                click.echo(f"{shown(result['event_id'])}: {describe(r)}")
        _echo_rule_errors(errors)
        click.echo(f"summary: {len(results)} event(s), {found} finding(s)")
    return Exit.FOUND if found else Exit.OK
