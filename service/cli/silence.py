"""`warden silence add|query|expire`: amtool's verbs for Warden's silences ([incidents.md](../../docs/incidents.md)),
through the incident API (the actor is the token's owner) or, break-glass, the database (`--database-url URL --as
OWNER`, recorded as break-glass:<unix user>). Every change is on the silence's hash-chained trail."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from responders.owner_actions import Result
from service.cli.exits import Exit
from service.cli.output import Output, line, output_option
from service.cli.service import Service, database_option, with_service
from warden.contract.matchers import parse_matcher
from warden.contract.matrix import parse_duration

_TIME = click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])


def _matchers(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(parse_matcher(value).text)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return out


def _duration(_: click.Context, __: click.Parameter, value: str) -> timedelta:
    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not isinstance(parsed, timedelta) or parsed <= timedelta(0):
        raise click.BadParameter(f"{value!r} is not a positive duration (30m, 2h, 1d)")
    return parsed


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value if value.tzinfo else value.replace(tzinfo=UTC)


def _text(item: dict[str, Any]) -> str:
    return (f"#{item['id']:<4} {item['state']:<8} {item['starts_at']} .. {item['ends_at']}  "
            f"{' '.join(item['matchers'])}  by {item['author']}: {item['comment']}")


@click.group()
def silence() -> None:
    """Silences: mute pages that match, for a while (recorded, containment still runs)."""


@silence.command()
@click.argument("matchers", nargs=-1, required=True, callback=_matchers)
@click.option("-c", "--comment", required=True, help="Why these pages are muted (required).")
@click.option("-a", "--author", help="Who it is for (default: the API token's owner, or --as).")
@click.option("-d", "--duration", default="1h", show_default=True, callback=_duration,
              help="How long from its start: 30m, 2h, 1d.")
@click.option("--start", type=_TIME, help="When it starts (UTC unless an offset is given; default: now).")
@click.option("--end", type=_TIME, help="When it ends, instead of --duration.")
@database_option
@click.option("--as", "owner_id", metavar="OWNER", help="Break-glass only (with --database-url): the owner you act "
              "for.")
@output_option("json")
def add(*, matchers: list[str], comment: str, author: str | None, duration: timedelta, start: datetime | None,
        end: datetime | None, database_url: str | None, owner_id: str | None, output: Output) -> None:
    """Add a silence: every MATCHER (label="value", !=, =~ regex, !~) must match a page for it to be muted.
    Labels: workflow, rule, severity, agent, target, responder, tier, quarantined."""
    starts = _utc(start) or datetime.now(UTC)
    ends = _utc(end) or starts + duration
    spec = {"matchers": matchers, "comment": comment, "author": author, "starts_at": starts.isoformat(),
            "ends_at": ends.isoformat()}
    made, source = with_service(database_url, owner_id, lambda s: s.add_silence(spec))
    if output == "text":
        click.echo(f"silence #{made['id']} added: {' '.join(made['matchers'])} until {made['ends_at']} ({source})")
    else:
        click.echo(line({**made, "source": source}))


@silence.command()
@click.argument("matchers", nargs=-1, callback=_matchers)
@click.option("--expired", is_flag=True, help="Expired silences too.")
@database_option
@output_option("json")
def query(*, matchers: list[str], expired: bool, database_url: str | None, output: Output) -> None:
    """List active and pending silences, newest first; with MATCHERS, those that hold each of them."""
    items, source = with_service(database_url, None, lambda s: s.silences(expired))
    items = [i for i in items if all(m in i["matchers"] for m in matchers)]
    if output == "json":
        click.echo(line({"source": source, "items": items}))
        return
    for item in items:
        click.echo(line(item) if output == "jsonl" else _text(item))
    click.echo(line({"summary": {"source": source, "shown": len(items)}}) if output == "jsonl"
               else f"{len(items)} silence(s) from {source}")


def _expiring(silence_id: int) -> Callable[[Service], Awaitable[tuple[Result, dict[str, Any]]]]:
    return lambda s: s.expire_silence(silence_id)


@silence.command()
@click.argument("ids", nargs=-1, required=True, type=click.IntRange(min=1))
@database_option
@click.option("--as", "owner_id", metavar="OWNER", help="Break-glass only (with --database-url): the owner you act "
              "for.")
@output_option("json")
def expire(*, ids: tuple[int, ...], database_url: str | None, owner_id: str | None, output: Output) -> None:
    """Expire silences now: pages after this are paged again."""
    failed = False
    for silence_id in ids:
        (result, body), source = with_service(database_url, owner_id, _expiring(silence_id))
        failed |= result is not Result.done
        if output == "text":
            message = (f"silence #{silence_id} expired" if result is Result.done
                       else f"silence #{silence_id}: {body.get('error')}")
            click.echo(f"{message} ({source})", err=result is not Result.done)
        else:
            click.echo(line({"id": silence_id, "result": result.value, **body, "source": source}))
    sys.exit(Exit.FOUND if failed else Exit.OK)
