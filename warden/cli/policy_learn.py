"""`warden policy learn`: draft a matrix folder from recorded activity, check it with the lint, say what it read."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from streams.backtest import DEFAULT_RECORD_BYTES
from streams.ingest import FORMATS
from streams.learn import Read, learn_files
from warden.cli.exits import Exit
from warden.cli.policy_output import chosen, emit_json, emit_jsonl, output_option, shown
from warden.policy import PolicyError, policy_files
from warden.policy.learn import Draft, Learner, draft
from warden.runtime.catalogue import load

LEARNED_FILE = "50-learned.yaml"
BASE_FILE = "00-base.yaml"
CURRENT_PREFIX = "00-current-"


@click.command(name="learn")
@click.argument("events", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The folder to write the draft matrix to (created; must be empty if it exists).")
@click.option("--policy", "current_path", type=click.Path(path_type=Path),
              help="The current matrix: its workflows' agents are mapped as today and its files copied into the "
                   "draft; without it every agent gets a stub workflow.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="native", show_default=True,
              help="Ingest format of EVENTS, as `warden replay` reads it.")
@click.option("--max-bytes", type=click.IntRange(min=1024), default=DEFAULT_RECORD_BYTES, show_default=True,
              envvar="WARDEN_MAX_MESSAGE_BYTES", help="Largest line, frame or single event.")
@output_option
def learn(*, events: tuple[Path, ...], out: Path, current_path: Path | None, fmt: str, max_bytes: int, output: str,
          as_json: bool) -> None:
    """Draft a matrix folder from recorded EVENTS (files in any format `warden replay` reads).

    Per workflow: the tools used, argument constraints that generalise, data and secret globs, identity operations,
    each with a YAML comment giving its evidence; the rules they feed in shadow mode. Invalid records and unreadable
    files are reported and skipped. Exit 0: drafted, and the draft lints clean; 2: --out is not empty, or no valid
    event was read; 3: --policy does not load."""
    fmt_out = chosen(output, as_json)
    current = None
    if current_path is not None:
        try:
            current = load(current_path)
        except PolicyError as exc:
            for issue in exc.issues:
                click.echo(f"warden: policy error: {issue}", err=True)
            sys.exit(Exit.POLICY_ERROR)
    if out.exists() and any(out.iterdir()):
        click.echo(f"warden: {out} is not empty: the draft goes to a new or empty folder", err=True)
        sys.exit(Exit.INVALID_INPUT)
    learner = Learner(current)
    read = learn_files(events, learner, fmt, max_bytes,
                       progress=lambda n: click.echo(f"warden: {n} events read", err=True))
    if read.events == 0:
        _report_invalid(read, fmt_out)
        click.echo(f"warden: no valid event in {len(events)} file(s) ({read.invalid_count} invalid)", err=True)
        sys.exit(Exit.INVALID_INPUT)
    header = [f"Draft written by `warden policy learn` from {', '.join(str(e) for e in events)} ({fmt}); "
              f"{read.invalid_count} invalid record(s) skipped."]
    if current is not None:
        header.append(f"Current matrix: {current_path} (sha256 {current.sha256}), copied as {CURRENT_PREFIX}*.")
    result = draft(learner, header)
    files = _write(out, result, current_path)
    try:
        loaded = load(out)
    except PolicyError as exc:  # a bug in the drafting, never the input's fault: say so and fail
        for issue in exc.issues:
            click.echo(f"warden: the draft does not lint (please report): {issue}", err=True)
        sys.exit(Exit.POLICY_ERROR)
    summary = {"out": str(out), "files": files, "events": read.events, "invalid": read.invalid_count,
               "drafted": result.drafted, "stubs": result.stubs, "untouched": result.untouched,
               "sha256": loaded.sha256, "shadow": True}
    invalid = [{"where": i.where, "reason": i.reason} for i in read.invalid]
    if fmt_out == "json":
        emit_json({"summary": summary, "invalid": invalid})
    elif fmt_out == "jsonl":
        emit_jsonl([*({"invalid": i} for i in invalid), {"summary": summary}])
    else:
        _report_invalid(read, fmt_out)
        click.echo(f"drafted {len(result.drafted)} workflow(s) and {len(result.stubs)} stub(s) for unknown agents "
                   f"from {read.events} events; every drafted entry is in shadow mode")
        if result.untouched:
            click.echo("kept as they are (no activity seen): " + shown(", ".join(result.untouched)))
        click.echo(f"OK: {out} lints clean; sha256 {loaded.sha256}")
        click.echo(f"next: warden replay EVENTS --policy {out} --against {current_path or 'CURRENT'} (docs/learn.md)")
    sys.exit(Exit.OK)


def _report_invalid(read: Read, fmt_out: str) -> None:
    if fmt_out != "text":
        return
    for bad in read.invalid:
        click.echo(f"invalid: {shown(bad.where)}: {shown(bad.reason)}")
    if read.invalid_count > len(read.invalid):
        click.echo(f"invalid: … and {read.invalid_count - len(read.invalid)} more")


def _write(out: Path, result: Draft, current_path: Path | None) -> list[str]:
    """The draft folder: the current matrix's files copied (so their comments stay), then the learned file, which
    replaces the drafted workflows (a later file wins a workflow, key by key) and puts their rules in shadow."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if current_path is not None:
        for source in policy_files(current_path):
            name = CURRENT_PREFIX + source.name
            (out / name).write_bytes(source.read_bytes())
            written.append(name)
    elif result.base_text is not None:
        (out / BASE_FILE).write_text(result.base_text, "utf-8")
        written.append(BASE_FILE)
    (out / LEARNED_FILE).write_text(result.text, "utf-8")
    written.append(LEARNED_FILE)
    return written
