"""`warden policy lint|test|routes`: check a matrix before it ships, test it against expectations, and see who gets
a workflow's findings."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from service.cli.exits import Exit
from service.cli.policy_learn import learn
from service.cli.policy_output import chosen, emit_json, emit_jsonl, output_option
from service.cli.policy_routes import print_routes
from service.cli.policy_test import test_cases, test_events
from service.runtime.catalogue import load
from service.runtime.settings import BUNDLED_POLICY
from warden.policy import Policy, PolicyError, PolicyIssue
from warden.policy.routes import resolve_workflow, routes

CASE_SUFFIXES = (".yaml", ".yml")


@click.group()
def policy() -> None:
    """Check, test, explain and draft an ownership matrix (a YAML file or a folder of them)."""


policy.add_command(learn)


def lint_policy(path: Path) -> tuple[Policy | None, list[PolicyIssue]]:
    """The loaded policy (None when it has errors) and every located error and warning."""
    try:
        loaded = load(path)
    except PolicyError as exc:
        return None, exc.issues + exc.warnings
    return loaded, list(loaded.warnings)


@policy.command()
@click.argument("path", type=click.Path(path_type=Path))
@output_option
def lint(path: Path, output: str, as_json: bool) -> None:
    """Validate the matrix at PATH. Each issue names its file:line, matrix path and reason.

    Exit 0: it loads (warnings allowed); 3: it has errors."""
    loaded, issues = lint_policy(path)
    errors = sum(1 for i in issues if i.level == "error")
    warnings = len(issues) - errors
    summary = {"path": str(path), "ok": loaded is not None, "sha256": loaded.sha256 if loaded else None,
               "errors": errors, "warnings": warnings}
    fmt = chosen(output, as_json)
    if fmt == "json":
        emit_json({**summary, "issues": [i.as_dict() for i in issues]})
    elif fmt == "jsonl":
        emit_jsonl([*(i.as_dict() for i in issues), {"summary": summary}])
    else:
        for issue in issues:
            click.echo(f"{issue.level}: {issue}")
        if loaded is None:
            click.echo(f"FAILED: {errors} error(s), {warnings} warning(s)")
        else:
            m = loaded.matrix
            click.echo(f"OK: {len(m.workflows)} workflows, {len(m.owners)} owners, {len(m.rules.custom)} custom "
                       f"rules, {warnings} warning(s); sha256 {loaded.sha256}")
    sys.exit(Exit.OK if loaded is not None else Exit.POLICY_ERROR)


def load_or_exit(path: Path) -> Policy:
    """The policy at PATH, or its located errors on standard error and exit 3."""
    try:
        return load(path)
    except PolicyError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        sys.exit(Exit.POLICY_ERROR)


@policy.command(name="test")
@click.argument("cases", type=click.Path(path_type=Path))
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), envvar="WARDEN_POLICY",
              show_default="$WARDEN_POLICY, else the bundled example", help="The matrix: a YAML file or a folder.")
@output_option
def test(cases: Path, policy_path: Path | None, output: str, as_json: bool) -> None:
    """Test the matrix (--policy) against CASES, as `replay EVENTS --policy PATH` does.

    CASES.yaml (or .yml) is an expectation file: each case an `event` or a session of `events` and the findings
    it must `expect` (rule, severity, tier, responder, playbooks; `[]` for none). Prints pass/fail per case and
    the rules no case exercised. Any other file is events (a JSON object, an array or JSON Lines), each shown with
    the findings it raises and where they would be routed.

    Events are decoded by the worker's strict decoder. Exit 0: every case passed (events: no findings);
    1: a case failed (events: findings); 2: CASES is invalid; 3: the policy is."""
    if not cases.is_file():
        raise click.BadParameter(f"{cases} is not a file", param_hint="CASES")
    live = load_or_exit(policy_path or BUNDLED_POLICY)
    fmt = chosen(output, as_json)
    if cases.suffix in CASE_SUFFIXES:
        sys.exit(test_cases(live, cases, fmt))
    sys.exit(test_events(live, cases, fmt))


@policy.command(name="routes")
@click.argument("workflow")
@click.option("--policy", "path", type=click.Path(path_type=Path), envvar="WARDEN_POLICY", default=BUNDLED_POLICY,
              show_default="$WARDEN_POLICY, else the bundled example", help="The matrix: a YAML file or a folder.")
@click.option("--tree", is_flag=True, help="Print the routing as a tree, like amtool's `config routes show`.")
@output_option
def routes_command(workflow: str, path: Path, tree: bool, output: str, as_json: bool) -> None:
    """Who gets WORKFLOW's findings (a workflow id, or one of its agents): responder, approver, escalation chain,
    channels, approval gates, playbooks and response tiers.

    Exit 0: shown; 2: no such workflow or agent; 3: the policy does not load."""
    live = load_or_exit(path)
    workflow_id = resolve_workflow(live, workflow)
    if workflow_id is None:
        known = ", ".join(sorted(live.matrix.workflows)) or "none"
        click.echo(f"error: no workflow or agent {workflow!r} in {path} (workflows: {known})", err=True)
        sys.exit(Exit.INVALID_INPUT)
    print_routes(routes(live, workflow_id), chosen(output, as_json), tree)
    sys.exit(Exit.OK)
