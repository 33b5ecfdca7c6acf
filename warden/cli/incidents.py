"""`warden incidents list|show` and `warden audit verify`: read the state of record without SQL, for people
(a readable timeline) and for scripts (`--json`)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from responders.trail import Filters, Trail, Verification

T = TypeVar("T")


def _with_trail(work: Callable[[Trail], Awaitable[T]]) -> T:
    from responders.db import make_engine, migrate
    from warden.cli import _settings

    async def run() -> T:
        engine = make_engine(_settings().effective_database_url)
        try:
            await migrate(engine)
            return await work(Trail(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _line(item: dict[str, Any]) -> str:
    return (f"#{item['id']:<5} {item['status']:<14} {item['tier']:<6} {item['severity']:<9} {item['rule']:<28} "
            f"agent={item['agent_id']} workflow={item['workflow'] or '-'} count={item['count']} "
            f"updated={item['updated_at']}")


def timeline_text(item: dict[str, Any]) -> str:
    """An incident and its timeline as a person reads it."""
    owners = item["owners"]
    lines = [f"Incident #{item['id']}: {item['title']}",
             f"  status {item['status']}  tier {item['tier']}  severity {item['severity']}  rule {item['rule']}  "
             f"count {item['count']}",
             f"  agent {item['agent_id']}  workflow {item['workflow'] or '-'}  target {item['target']}",
             f"  responder {owners.get('responder', {}).get('id')}  approver "
             f"{(owners.get('approver') or {}).get('id', '-')}  policy {item['policy_sha256'][:12]}",
             f"  chain {'verified' if item['chain']['ok'] else 'BROKEN'} ({item['chain']['entries']} entries)",
             "", "Timeline:"]
    for e in item["timeline"]:
        who = e["actor"] + (f" ({e['identity']})" if e["identity"] else "")
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
        lines.append(f"  {e['seq']:>3}  {e['at']}  {e['kind']:<28} by {who}" + (f"  {detail}" if detail else ""))
    if item["containment"]:
        lines += ["", "Containment:"]
        for st in item["containment"]:
            lines.append(f"  {st['playbook']}[{st['step']}] {st['action']}: {st['status']}"
                         + (f" (approved by {st['decided_by']})" if st["decided_by"] else ""))
    return "\n".join(lines)


@click.group()
def incidents() -> None:
    """Read incidents and their timelines."""


@incidents.command(name="list")
@click.option("--status", help="open, acknowledged, resolved, false_positive")
@click.option("--workflow")
@click.option("--severity", help="low, medium, high, critical")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
              help="Updated at or after (UTC unless an offset is given).")
@click.option("--tier", type=click.Choice(["page", "review", "log"]),
              help="page (notified at once), review (in the periodic digest) or log (recorded only).")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document: total, items.")
def list_(*, status: str | None, workflow: str | None, severity: str | None, since: datetime | None,
          tier: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List incidents, newest first."""
    from responders.store import utcnow

    when = None if since is None else since if since.tzinfo else since.replace(tzinfo=utcnow().tzinfo)
    total, items = _with_trail(lambda t: t.incidents(Filters(status, workflow, severity, when, tier), limit=limit,
                                                       offset=offset))
    if as_json:
        click.echo(json.dumps({"total": total, "limit": limit, "offset": offset, "items": items}))
        return
    for item in items:
        click.echo(_line(item))
    click.echo(f"{len(items)} of {total} incident(s)")


@incidents.command()
@click.argument("incident_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show(incident_id: int, as_json: bool) -> None:
    """Show one incident with its timeline, in chain order."""
    item = _with_trail(lambda t: t.incident(incident_id))
    if item is None:
        click.echo(f"incident #{incident_id} does not exist", err=True)
        sys.exit(1)
    click.echo(json.dumps(item) if as_json else timeline_text(item))


@click.group()
def audit() -> None:
    """Check the audit trail."""


@audit.command(name="verify")
@click.option("--json", "as_json", is_flag=True)
def verify_(as_json: bool) -> None:
    """Recompute every hash chain (each incident's timeline, and the refused requests); exit 1 naming the first
    broken link of each broken chain."""
    result: Verification = _with_trail(lambda t: t.verify())
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        for b in result.breaks:
            where = "security events" if b.chain == "security" else f"incident #{b.chain}"
            click.echo(f"BROKEN {where}: entry {b.seq} (row id {b.entry_id}): {b.reason}")
        click.echo(f"{'ok' if result.ok else 'FAILED'}: {result.chains} chain(s), {result.entries} entries, "
                   f"{len(result.breaks)} broken")
    sys.exit(0 if result.ok else 1)
