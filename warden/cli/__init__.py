"""The `warden` command: run the worker, play the demo, print the schema, check policies, replay events."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from warden import __version__
from warden.cli.db import db
from warden.cli.dlq import dlq
from warden.cli.incident import incident
from warden.cli.incidents import audit, incidents
from warden.cli.policy import policy
from warden.cli.replay import replay
from warden.contract.events import ActivityEvent
from warden.policy import PolicyError
from warden.runtime.broker import EmbeddedBrokerError
from warden.runtime.settings import Settings
from warden.runtime.topics import BrokerUnreachable


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"WARDEN_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        raise click.ClickException("invalid settings: " + "; ".join(lines)) from None


def _fail_cleanly(exc: BaseException) -> None:
    """Known start-up failures become one line and exit 2, never a stack trace."""
    if isinstance(exc, PolicyError):
        for issue in exc.issues:
            click.echo(f"warden: policy error: {issue}", err=True)
    else:
        click.echo(f"warden: {exc}", err=True)
    sys.exit(2)


STARTUP_ERRORS = (PolicyError, BrokerUnreachable, EmbeddedBrokerError, OSError)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})  # subcommands inherit -h
@click.version_option(__version__, prog_name="warden")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO instead of WARNING.")
def main(verbose: bool) -> None:
    """Warden: detect LLM agents acting beyond their scope and route incidents to the named responder."""
    from warden.runtime.logs import configure

    fmt = os.environ.get("WARDEN_LOG_FORMAT", "json")
    if fmt not in {"json", "text"}:
        raise click.ClickException(f"invalid settings: WARDEN_LOG_FORMAT: {fmt!r} is not json or text")
    configure(logging.INFO if verbose else logging.WARNING, fmt)


@main.command()
def schema() -> None:
    """Print the JSON Schema of the native activity event (schema v1)."""
    click.echo(json.dumps(ActivityEvent.model_json_schema(), indent=2))


@main.command()
def run() -> None:
    """Run the worker until SIGTERM/SIGINT. Starts the embedded broker when WARDEN_KAFKA_BOOTSTRAP is unset."""
    from warden.runtime.worker import Runtime  # here, not above: faust costs `schema` and `policy` 0.6 s

    settings = _settings()

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with Runtime(settings):
            await stop.wait()

    try:
        asyncio.run(_run())
    except STARTUP_ERRORS as exc:
        _fail_cleanly(exc)


@main.command()
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for the pipeline to settle.")
@click.option("--send-only", is_flag=True, help="Only send the scenario to WARDEN_KAFKA_BOOTSTRAP, for workers "
              "already running there (compose's demo-producer); print what was sent.")
@click.option("--metrics-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the worker's final /metrics text to this file.")
def demo(timeout: float, send_only: bool, metrics_out: Path | None) -> None:
    """Start everything on the embedded defaults, play the bundled scenario, print one JSON summary line."""
    from warden.cli.demo import run_demo, send_scenario  # here, not above: faust costs `schema` and `policy` 0.6 s

    settings = _settings()
    try:
        if send_only:
            plan = asyncio.run(send_scenario(settings))
            click.echo(json.dumps({"messages": len(plan.messages), "events": plan.valid_events,
                                   "invalid": plan.invalid, "run_id": plan.run_id}))
            return
        ok = asyncio.run(run_demo(settings, timeout, metrics_out))
    except STARTUP_ERRORS as exc:
        _fail_cleanly(exc)
    sys.exit(0 if ok else 1)


main.add_command(policy)
main.add_command(dlq)
main.add_command(incident)
main.add_command(replay)
main.add_command(incidents)
main.add_command(audit)
main.add_command(db)
