"""The `warden` command: run the worker, play the demo, print the schema, check policies, replay events."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from service.cli.db import db
from service.cli.dlq import dlq
from service.cli.exits import Exit
from service.cli.incident_actions import incident
from service.cli.incident_records import audit, incidents
from service.cli.policy import policy
from service.cli.replay import replay
from service.cli.silence import silence
from service.runtime.broker import EmbeddedBrokerError
from service.runtime.settings import Settings
from service.runtime.topics import BrokerUnreachable
from service.runtime.worker_errors import SettingUnusable
from warden import __version__
from warden.contract.events import ActivityEvent
from warden.policy import PolicyError


def _setting_error(error: Mapping[str, Any]) -> str:
    """One validation error as `WARDEN_NAME: reason` (a check across settings names its variables itself)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"WARDEN_{'_'.join(str(p) for p in error['loc']).upper()}: {message}"


def _settings() -> Settings:
    """The settings, or one line naming each bad variable and exit 2 (no traceback): unknown WARDEN_* variables
    (with the nearest known one), then values that do not validate."""
    from service.runtime.env_check import unknown_variables

    unknown = unknown_variables(os.environ)
    if unknown:
        _invalid_settings(unknown)
    try:
        return Settings()
    except ValidationError as exc:
        _invalid_settings([_setting_error(e) for e in exc.errors()])
        raise  # unreachable: _invalid_settings exits


def _invalid_settings(lines: list[str]) -> NoReturn:
    click.echo("warden: invalid settings: " + "; ".join(lines), err=True)
    sys.exit(Exit.INVALID_INPUT)


def _fail_cleanly(exc: BaseException) -> None:
    """Known start-up failures become one line and exit 2, never a stack trace."""
    if isinstance(exc, PolicyError):
        for issue in exc.issues:
            click.echo(f"warden: policy error: {issue}", err=True)
    else:
        click.echo(f"warden: {exc}", err=True)
    sys.exit(Exit.INVALID_INPUT)


STARTUP_ERRORS = (PolicyError, BrokerUnreachable, EmbeddedBrokerError, SettingUnusable, OSError)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})  # subcommands inherit -h
@click.version_option(__version__, prog_name="warden")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO instead of WARNING.")
def main(verbose: bool) -> None:
    """Warden: detect LLM agents acting beyond their scope and route incidents to the named responder."""
    from service.runtime.logs import configure

    fmt = os.environ.get("WARDEN_LOG_FORMAT", "json")
    if fmt not in {"json", "text"}:
        _invalid_settings([f"WARDEN_LOG_FORMAT: {fmt!r} is not json or text"])
    configure(logging.INFO if verbose else logging.WARNING, fmt)


@main.command()
def schema() -> None:
    """Print the JSON Schema of the native activity event (schema v1)."""
    click.echo(json.dumps(ActivityEvent.model_json_schema(), indent=2))


@main.command()
@click.option("--embedded", is_flag=True, help="With WARDEN_KAFKA_BOOTSTRAP unset, start the embedded in-memory "
              "broker (like WARDEN_EMBEDDED=true): for trying Warden out, never for production.")
def run(embedded: bool) -> None:
    """Run the worker until SIGTERM/SIGINT, on WARDEN_KAFKA_BOOTSTRAP's Kafka (the embedded broker only when asked)."""
    from service.runtime.worker import Runtime  # here, not above: faust costs `schema` and `policy` 0.6 s

    settings = _settings()
    if not settings.kafka_bootstrap and not (embedded or settings.embedded):
        _invalid_settings(["WARDEN_KAFKA_BOOTSTRAP: not set; set it to your Kafka's host:port[,host:port], or pass "
                           "--embedded (WARDEN_EMBEDDED=true) for the in-memory broker, whose data is lost on stop"])

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
    from service.demo.run import run_demo, send_scenario  # here, not above: faust costs `schema` and `policy` 0.6 s

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
main.add_command(silence)
