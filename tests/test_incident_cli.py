"""`warden incident approve|deny|release ID --as OWNER`: the approver's decisions without Slack, checked and audited."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from responders.db.models import ContainmentDecision, ContainmentStep
from responders.incident_responder import IncidentResponder
from responders.store import utcnow
from tests.containment_helpers import containment_policy, violation
from warden.cli import main
from warden.runtime.settings import Settings

GATED = [{"rules": ["unapproved_tool"], "playbook": "tell", "gate": "approver", "min_severity": "low"}]


def cli(db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["incident", *args], env={"WARDEN_DATABASE_URL": db_url,
                                                               "WARDEN_NOTIFIERS": "console"})
    return result.exit_code, result.output


async def _open(db_url: str, tmp: Path) -> None:
    responder = IncidentResponder(Settings(database_url=db_url, data_dir=tmp, notifiers="console"))
    await responder.start()
    try:
        await responder.store.record_finding(violation(containment_policy(GATED)), utcnow())
    finally:
        await responder.stop()


async def _rows(db_url: str, model: type) -> list:  # type: ignore[type-arg]
    responder = IncidentResponder(Settings(database_url=db_url, notifiers="console"))
    try:
        async with responder.store.sessions.begin() as s:
            return list((await s.execute(select(model))).scalars())
    finally:
        await responder.stop()


def test_the_approver_decides_from_the_cli_and_anyone_else_is_refused_and_recorded(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    asyncio.run(_open(db_url, tmp_path))
    code, out = cli(db_url, "approve", "1", "--as", "marco")
    assert code == 1 and "refused: only jordan may approve incident #1" in out
    assert asyncio.run(_rows(db_url, ContainmentDecision)) == []
    code, out = cli(db_url, "approve", "9", "--as", "jordan")
    assert code == 1 and "incident #9 does not exist" in out
    code, out = cli(db_url, "approve", "1", "--as", "jordan")
    assert code == 0, out
    [decision] = asyncio.run(_rows(db_url, ContainmentDecision))
    assert (decision.decision, decision.owner_id) == ("approve", "jordan")
    assert decision.slack_user.startswith("cli:")
    code, out = cli(db_url, "deny", "1", "--as", "jordan")  # decided already
    assert code == 1 and "containment approved by jordan" in out
    code, out = cli(db_url, "release", "1", "--as", "jordan")
    assert code == 1 and "no quarantine in effect" in out

    async def timeline() -> list[tuple[str, str]]:
        responder = IncidentResponder(Settings(database_url=db_url, notifiers="console"))
        try:
            return [(e.kind, e.actor) for e in await responder.store.timeline(1)]
        finally:
            await responder.stop()

    entries = asyncio.run(timeline())
    assert ("refused", "unauthorised") in entries and ("containment_approve", "jordan") in entries


def test_a_release_needs_a_quarantine_in_effect_and_the_approver(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    asyncio.run(_open(db_url, tmp_path))

    async def quarantine_done() -> None:
        responder = IncidentResponder(Settings(database_url=db_url, notifiers="console"))
        try:
            async with responder.store.sessions.begin() as s:
                [step] = (await s.execute(select(ContainmentStep))).scalars()
                step.action, step.status = "quarantine_agent", "done"
        finally:
            await responder.stop()

    asyncio.run(quarantine_done())
    code, out = cli(db_url, "release", "1", "--as", "iam-team")
    assert code == 1 and "refused" in out
    code, out = cli(db_url, "release", "1", "--as", "jordan")
    assert code == 0 and "release of incident #1 recorded" in out, out
    code, out = cli(db_url, "release", "1", "--as", "jordan")
    assert code == 1 and "already recorded" in out
    release = [r for r in asyncio.run(_rows(db_url, ContainmentStep)) if r.action == "release"]
    assert [(r.status, r.decided_by) for r in release] == [("approved", "jordan")]
