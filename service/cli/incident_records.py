"""`warden incidents list|show` and `warden audit verify`: read the state of record through the incident API (or,
break-glass, a database named with `--database-url`, opened read-only), for people and for scripts."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from responders.incidents import Status
from responders.trail import PAGE_MAX, SEVERITIES, TIERS, Filters
from service.cli.exits import Exit
from service.cli.output import Output, line, output_option
from service.cli.service import as_utc, database_option, with_service


def _line(item: dict[str, Any]) -> str:
    muted = (f" silenced_by=#{item['silenced_by']}" if item.get("silenced_by") else
             f" inhibited_by=#{item['inhibited_by']}" if item.get("inhibited_by") else "")
    grouped = f" group=#{item['group']}({item['group_role']})" if item.get("group") else ""
    return (f"#{item['id']:<5} {item['status']:<14} {item['tier']:<6} {item['severity']:<9} {item['rule']:<28} "
            f"agent={item['agent_id']} workflow={item['workflow'] or '-'} count={item['count']} "
            f"updated={item['updated_at']}{grouped}{muted}")


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
    """Read incidents and their timelines (through the incident API)."""


@incidents.command(name="list")
@click.option("--status", type=click.Choice([s.value for s in Status]))
@click.option("--workflow")
@click.option("--severity", type=click.Choice(SEVERITIES))
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
              help="Updated at or after (UTC unless an offset is given).")
@click.option("--tier", type=click.Choice(TIERS),
              help="page (notified at once), review (in the periodic digest) or log (recorded only).")
@click.option("--group", type=click.IntRange(min=1), help="The incidents of one group (its digest names it).")
@click.option("--limit", type=click.IntRange(1, PAGE_MAX), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@database_option
@output_option("json")
def list_(*, status: str | None, workflow: str | None, severity: str | None, since: datetime | None,
          tier: str | None, group: int | None, limit: int, offset: int, database_url: str | None,
          output: Output) -> None:
    """List incidents, newest first."""
    filters = Filters(status, workflow, severity, as_utc(since), tier, group)
    (total, items), source = with_service(database_url, None, lambda s: s.incidents(filters, limit, offset))
    if output == "json":
        click.echo(line({"source": source, "total": total, "limit": limit, "offset": offset, "items": items}))
        return
    for item in items:
        click.echo(line(item) if output == "jsonl" else _line(item))
    summary = {"source": source, "total": total, "shown": len(items), "limit": limit, "offset": offset}
    click.echo(line({"summary": summary}) if output == "jsonl"
               else f"{len(items)} of {total} incident(s) from {source}")


@incidents.command()
@click.argument("incident_id", type=click.IntRange(min=1))
@database_option
@output_option("json")
def show(incident_id: int, database_url: str | None, output: Output) -> None:
    """Show one incident with its timeline, in chain order."""
    item, source = with_service(database_url, None, lambda s: s.incident(incident_id))
    if item is None:
        click.echo(f"warden: incident #{incident_id} does not exist in {source}", err=True)
        sys.exit(Exit.FOUND)
    click.echo(line({**item, "source": source}) if output != "text" else f"{timeline_text(item)}\n\n(from {source})")


@click.group()
def audit() -> None:
    """Check the audit trail (through the incident API)."""


@audit.command(name="verify")
@database_option
@output_option("json")
def verify_(database_url: str | None, output: Output) -> None:
    """Recompute every hash chain (each incident's timeline, the approvals and the refused requests); exit 1 naming
    the first broken link of each broken chain."""
    result, source = with_service(database_url, None, lambda s: s.verify())
    ok = bool(result["ok"])
    if output == "json":
        click.echo(line({**result, "source": source}))
    elif output == "jsonl":
        for b in result["breaks"]:
            click.echo(line(b))
        click.echo(line({"summary": {k: v for k, v in result.items() if k != "breaks"} | {"source": source}}))
    else:
        for b in result["breaks"]:
            where = "security events" if b["chain"] == "security" else f"incident #{b['chain']}"
            click.echo(f"BROKEN {where}: entry {b['seq']} (row id {b['entry_id']}): {b['reason']}")
        click.echo(f"{'ok' if ok else 'FAILED'}: {result['chains']} chain(s), {result['entries']} entries, "
                   f"{len(result['breaks'])} broken, in {source}")
    sys.exit(Exit.OK if ok else Exit.FOUND)
