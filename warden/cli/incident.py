"""`warden incident approve|deny|release ID --as OWNER`: the approver's decisions without Slack.

They write to the incident database exactly what a click writes (a decision, a release request); the running
workers' playbook engine consumes it, re-checking the owner. An owner who may not act is refused and audited.
"""

from __future__ import annotations

import asyncio
import getpass
import sys

import click

from warden.runtime.settings import Settings


@click.group()
def incident() -> None:
    """Act on an incident as a named owner (the workers' engine carries it out)."""


def _act(incident_id: int, owner_id: str, what: str) -> None:
    from warden.cli import _settings

    ok, message = asyncio.run(_decide(_settings(), incident_id, owner_id, what))
    click.echo(message, err=not ok)
    sys.exit(0 if ok else 1)


async def _decide(settings: Settings, incident_id: int, owner_id: str, what: str) -> tuple[bool, str]:
    # Here, not above: the database and notifier stack cost every other command's start-up.
    from playbooks.ledger import CLI
    from responders.db import make_engine, migrate
    from responders.incidents import ACTIVE, approvers
    from responders.notifiers import notifier_names
    from responders.store import IncidentStore, utcnow

    engine = make_engine(settings.effective_database_url)
    try:
        await migrate(engine)
        store = IncidentStore(engine, notifier_names(settings.notifiers, settings.slack_token is not None))
        view = await store.incident(incident_id)
        if view is None:
            return False, f"incident #{incident_id} does not exist"
        allowed = {o.id: o for o in approvers(view.owners, view.approval_level)}
        owner = allowed.get(owner_id)
        identity = f"{getpass.getuser()}"
        now = utcnow()
        if owner is None:
            names = ", ".join(allowed) or "nobody (no approver is named)"
            reason = f"only {names} may {what} incident #{incident_id}"
            await store.record_refusal(incident_id, f"{CLI}.{what}", f"{CLI}:{identity}:{owner_id}", reason, now)
            return False, f"refused: {reason}; the attempt was recorded"
        if what == "release":
            if not view.quarantined:
                return False, f"incident #{incident_id}: no quarantine in effect to release"
            done = await store.request_release(incident_id, owner=owner, via=CLI, identity=identity, now=now)
            return done, (f"release of incident #{incident_id} recorded; the workers publish it" if done
                          else f"incident #{incident_id}: a release is already recorded")
        if view.status not in ACTIVE or not view.awaiting_approval or view.decision is not None:
            return False, f"incident #{incident_id}: {view.containment_status}"
        decision = "approve" if what == "approve" else "deny"
        done = await store.decide(incident_id, decision, owner=owner, slack_user=f"{CLI}:{identity}",
                                  note=f"Containment {decision}d by {owner.name or owner.id} ({CLI}).", now=now)
        return done, (f"incident #{incident_id}: containment {decision}d as {owner_id}; the workers act on it"
                      if done else f"incident #{incident_id} changed meanwhile; nothing was recorded")
    finally:
        await engine.dispose()


def _command(what: str, help_text: str) -> click.Command:
    @click.command(name=what, help=help_text)
    @click.argument("incident_id", type=int)
    @click.option("--as", "owner_id", required=True, help="The owner id (from the matrix) you act as.")
    def command(incident_id: int, owner_id: str) -> None:
        _act(incident_id, owner_id, what)

    return command


incident.add_command(_command("approve", "Approve the containment an incident's playbooks wait for."))
incident.add_command(_command("deny", "Deny the containment an incident's playbooks wait for."))
incident.add_command(_command("release", "Lift the quarantine an incident's playbook put on its agent."))
