"""`warden incident ack|resolve|false-positive|approve|deny|release ID`: what an owner does from Slack, from a shell.

Through the incident API the actor is the owner of the bearer token (WARDEN_API_TOKEN), checked by the server like a
click; break-glass (`--database-url URL --as OWNER`) writes to the database directly, recorded as
break-glass:<unix user>. Refusals are recorded either way; the workers carry out containment decisions.
"""

from __future__ import annotations

import sys

import click

from responders.owner_actions import Result
from service.cli.exits import Exit
from service.cli.output import Output, line, output_option
from service.cli.service import database_option, with_service

_EXIT = {Result.done: Exit.OK, Result.forbidden: Exit.FOUND, Result.not_found: Exit.FOUND,
         Result.conflict: Exit.FOUND}


@click.group()
def incident() -> None:
    """Act on an incident as its owner: lifecycle and containment (through the incident API)."""


def _command(name: str, action: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    @click.argument("incident_id", type=click.IntRange(min=1))
    @database_option
    @click.option("--as", "owner_id", metavar="OWNER", help="Break-glass only (with --database-url): the owner id "
                  "from the matrix you act for. Through the API you act as your token's owner.")
    @output_option("json")
    def command(incident_id: int, database_url: str | None, owner_id: str | None, output: Output) -> None:
        outcome, source = with_service(database_url, owner_id, lambda s: s.act(incident_id, action))
        if output == "text":
            click.echo(f"{outcome.message} ({source})", err=outcome.result is not Result.done)
        else:
            click.echo(line({"id": incident_id, "action": action, "result": outcome.result.value,
                             "status": outcome.status, "message": outcome.message, "source": source}))
        sys.exit(_EXIT[outcome.result])

    return command


for _name, _action, _help in (
    ("ack", "ack", "Acknowledge the incident (stops its escalation)."),
    ("resolve", "resolve", "Resolve an acknowledged incident."),
    ("false-positive", "false_positive", "Close the incident as a false positive."),
    ("approve", "approve", "Approve the containment an incident's playbooks wait for."),
    ("deny", "deny", "Deny the containment an incident's playbooks wait for."),
    ("release", "release", "Lift the quarantine an incident's playbook put on its agent."),
):
    incident.add_command(_command(_name, _action, _help))
