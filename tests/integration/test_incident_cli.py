"""`warden incidents|incident|audit` as an on-call responder meets them (both backends): through the incident API the
actor is the token's owner; break-glass database access is explicit, read-only for reads and recorded for actions;
a read-only command never migrates or creates a database, and says what it read; every failure is one line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import select

from responders.db import current_revision, head_revision, make_engine, session_factory
from responders.db.models import ContainmentDecision, ContainmentStep, TimelineEntry
from responders.store.common import utcnow
from service.cli import main
from service.runtime.settings import Settings
from tests.support.containment_helpers import containment_policy, engine_on, violation
from tests.support.incident_db import upgrade_to
from tests.support.incident_helpers import FakeClock, running, served

GATED = [{"rules": ["unapproved_tool"], "playbook": "tell", "gate": "approver", "min_severity": "low"}]
TEAM_TOKEN = "team-token-0123456789abcdef"
JORDAN_TOKEN = "jordan-token-0123456789abcdef"
MARCO_TOKEN = "marco-token-0123456789abcdef"
TOKENS = f"iam-team:{TEAM_TOKEN},jordan:{JORDAN_TOKEN},marco:{MARCO_TOKEN}"
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`warden ARGS` in-process, with no WARDEN_API_* unless given; (exit code, stdout, stderr)."""
    full = {"WARDEN_API_URL": "", "WARDEN_API_TOKEN": "", "WARDEN_NOTIFIERS": "console", **(env or {})}
    result = CliRunner().invoke(main, list(args), env=full)
    return result.exit_code, result.stdout, result.stderr


async def acli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The same from a test that serves the API on its own loop (the command runs its own)."""
    return await asyncio.to_thread(cli, *args, env=env)


async def _open(db_url: str, tmp: Path) -> None:
    async with running(Settings(database_url=db_url, data_dir=tmp, notifiers="console")) as responder:
        await responder.store.incidents.record_finding(violation(containment_policy(GATED)), utcnow())


async def _rows(db_url: str, model: type) -> list:  # type: ignore[type-arg]
    engine = make_engine(db_url)
    try:
        async with session_factory(engine).begin() as s:
            return list((await s.execute(select(model))).scalars())
    finally:
        await engine.dispose()


async def _revision(db_url: str) -> str | None:
    engine = make_engine(db_url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


# -- read-only commands never change the database, and a missing or old one is an error ---------------------------


def test_without_the_api_or_a_database_url_the_commands_say_how_to_set_one_and_create_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["incidents", "list"], ["audit", "verify"], ["incidents", "show", "1"], ["incident", "ack", "1"]):
        code, out, err = cli(*args)
        assert code == 2 and out == "" and "set WARDEN_API_URL" in err and "--database-url" in err, (args, err)
    assert list(tmp_path.iterdir()) == []  # no ./data/warden.db


def test_a_missing_sqlite_file_is_exit_4_and_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'warden.db'}"
    for args in (["incidents", "list"], ["audit", "verify"], ["incidents", "show", "1"]):
        code, out, err = cli(*args, "--database-url", url)
        assert code == 4 and out == "" and "ok" not in err, err
        assert err.count("\n") == 1 and "run `warden db upgrade`" in err
    assert not (tmp_path / "data").exists()


async def test_reads_do_not_migrate_an_old_database_and_db_upgrade_does(empty_incident_db: str) -> None:
    engine = make_engine(empty_incident_db)
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_to, "0007")
    await engine.dispose()
    for args in (["incidents", "list"], ["audit", "verify"], ["incidents", "show", "1"]):
        code, out, err = await acli(*args, "--database-url", empty_incident_db)
        assert code == 4 and out == "", err
        assert f"at revision 0007, this release needs {head_revision()}: run `warden db upgrade`" in err
    assert await _revision(empty_incident_db) == "0007"

    code, out, _ = await acli("db", "upgrade", "--database-url", empty_incident_db)
    assert code == 0 and f"from 0007 to revision {head_revision()}" in out
    assert await _revision(empty_incident_db) == head_revision()
    code, out, _ = await acli("db", "upgrade", "--database-url", empty_incident_db)
    assert code == 0 and "nothing to do" in out
    code, out, _ = await acli("audit", "verify", "--database-url", empty_incident_db)
    assert code == 0 and out.startswith("ok: 0 chain(s)") and "(break-glass)" in out


async def test_an_empty_database_is_not_given_a_schema_by_a_read(empty_incident_db: str) -> None:
    code, _, err = await acli("incidents", "list", "--database-url", empty_incident_db)
    assert code == 4 and "run `warden db upgrade`" in err  # SQLite: no file; PostgreSQL: no schema
    assert await _revision(empty_incident_db) is None


async def test_workers_starting_together_migrate_one_at_a_time(empty_incident_db: str) -> None:
    engines = [make_engine(empty_incident_db) for _ in range(3)]
    try:
        from responders.db import migrate

        befores = await asyncio.gather(*(migrate(e) for e in engines))
    finally:
        for e in engines:
            await e.dispose()
    assert (befores.count(None), befores.count(head_revision())) == (1, 2)  # exactly one created the schema


def test_an_unreachable_postgresql_is_one_line_with_the_cause_and_no_password() -> None:
    env = {k: "" for k in ("WARDEN_API_URL", "WARDEN_API_TOKEN")}
    out = subprocess.run([sys.executable, "-m", "service", "incidents", "list", "--database-url",
                          "postgresql+asyncpg://warden:s3cret-pw@127.0.0.1:1/warden"], capture_output=True, text=True,
                         env={**env, "PATH": "/usr/bin:/bin"}, cwd=REPO, timeout=60, check=False)
    assert out.returncode == 4 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith("warden: cannot reach the database postgresql+asyncpg://warden:***@127.0.0.1:1/warden: ")
    assert "Connect call failed" in line or "refused" in line.lower()
    assert "s3cret-pw" not in out.stderr


def test_an_unusable_data_dir_is_one_line_and_exit_4(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    code, out, err = cli("db", "upgrade", "--database-url", f"sqlite+aiosqlite:///{blocker / 'warden.db'}")
    assert code == 4 and out == "" and err.startswith("warden: cannot reach the database ") and err.count("\n") == 1


@pytest.mark.parametrize("args", [["--status", "bogus"], ["--limit", "-1"], ["--limit", "0"], ["--offset", "-3"],
                                  ["--severity", "urgent"], ["--tier", "urgent"], ["--since", "yesterday"]])
def test_filters_are_checked(args: list[str], tmp_path: Path) -> None:
    code, _, err = cli("incidents", "list", "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", *args)
    assert code == 2 and "Invalid value" in err


# -- through the incident API: the actor is the token's owner ------------------------------------------------------


def with_tokens(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_tokens": SecretStr(TOKENS)})


def api(base: str, token: str) -> dict[str, str]:
    return {"WARDEN_API_URL": base, "WARDEN_API_TOKEN": token}


async def test_the_cli_acts_as_the_token_owner_through_the_api(incident_settings: Settings) -> None:
    clock = FakeClock()
    policy = containment_policy(GATED)
    async with served(with_tokens(incident_settings), clock) as (responder, base), aiohttp.ClientSession() as http:
        await responder.store.incidents.record_finding(violation(policy), clock())
        await responder.store.incidents.record_finding(violation(policy, name="rm.rf"), clock())

        code, out, _ = await acli("incidents", "list", "-o", "json", env=api(base, TEAM_TOKEN))
        page = json.loads(out)
        assert code == 0 and page["total"] == 2 and page["source"] == f"incident API {base}"
        code, out, _ = await acli("incidents", "list", "--status", "open", env=api(base, TEAM_TOKEN))
        assert code == 0 and out.splitlines()[-1] == f"2 of 2 incident(s) from incident API {base}"
        for since, total in (("2020-01-01", 2), ("2999-01-01T00:00:00+02:00", 0)):  # the offset's + survives the URL
            code, out, _ = await acli("incidents", "list", "--since", since, "-o", "json", env=api(base, TEAM_TOKEN))
            assert code == 0 and json.loads(out)["total"] == total, (since, out[:300])

        # --as cannot name someone else: through the API the token says who acts.
        code, _, err = await acli("incident", "ack", "1", "--as", "iam-team", env=api(base, MARCO_TOKEN))
        assert code == 2 and "--as is for break-glass" in err
        code, _, err = await acli("incident", "ack", "1", env=api(base, MARCO_TOKEN))
        assert code == 1 and "refused: marco is not the responder" in err
        code, _, err = await acli("incident", "approve", "1", env=api(base, TEAM_TOKEN))
        assert code == 1 and "refused: only jordan may approve incident #1" in err
        code, out, _ = await acli("incident", "approve", "1", env=api(base, JORDAN_TOKEN))
        assert code == 0 and "containment approved as jordan" in out
        code, out, _ = await acli("incident", "ack", "1", "-o", "json", env=api(base, TEAM_TOKEN))
        assert code == 0 and json.loads(out)["status"] == "acknowledged"
        code, out, _ = await acli("incident", "resolve", "1", env=api(base, TEAM_TOKEN))
        assert code == 0 and "incident #1 is resolved, by iam-team" in out
        code, out, _ = await acli("incident", "false-positive", "2", env=api(base, TEAM_TOKEN))
        assert code == 0 and "incident #2 is false_positive" in out
        code, _, err = await acli("incident", "resolve", "2", env=api(base, TEAM_TOKEN))
        assert code == 1 and "cannot become resolved" in err
        code, _, err = await acli("incident", "ack", "9", env=api(base, TEAM_TOKEN))
        assert code == 1 and "does not exist" in err

        engine = engine_on(responder, policy, http, clock=clock)
        await engine.run_due()  # the engine re-checks the API's decision and acts on it
        await engine.run_due()

        code, out, _ = await acli("incidents", "show", "1", env=api(base, TEAM_TOKEN))
        assert code == 0 and out.rstrip().endswith(f"(from incident API {base})")
        code, out, _ = await acli("audit", "verify", env=api(base, TEAM_TOKEN))
        assert code == 0 and out.startswith("ok: ") and out.rstrip().endswith(f"in incident API {base}")
        code, _, err = await acli("incidents", "list", env=api(base, "not-a-token-0123456789"))
        assert code == 2 and "refused the token" in err
        assert TEAM_TOKEN not in err

    entries = [(e.kind, e.actor, e.identity) for e in await _rows(incident_settings.effective_database_url,
                                                                       TimelineEntry)]
    assert ("containment_approve", "jordan") in {(k, a) for k, a, _ in entries}
    assert ("containment_steps_approved", "jordan") in {(k, a) for k, a, _ in entries}
    assert {u.split(":")[0] for k, _, u in entries if k in {"acknowledged", "resolved", "false_positive"}} == {"api"}
    assert [a for k, a, _ in entries if k == "refused"] == ["unauthorised", "unauthorised"]
    [decision] = await _rows(incident_settings.effective_database_url, ContainmentDecision)
    assert decision.owner_id == "jordan" and decision.identity.startswith("api:")


def test_an_unreachable_api_is_one_line_and_exit_4() -> None:
    code, out, err = cli("incidents", "list", env=api("http://127.0.0.1:1", TEAM_TOKEN))
    assert code == 4 and out == "" and err.startswith("warden: cannot reach the incident API at http://127.0.0.1:1")
    assert err.count("\n") == 1 and TEAM_TOKEN not in err


# -- break-glass: explicit, and recorded as such -------------------------------------------------------------------


def test_break_glass_decides_as_the_named_approver_and_is_recorded_as_break_glass(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    asyncio.run(_open(db_url, tmp_path))
    glass = ["--database-url", db_url]
    code, _, err = cli("incident", "approve", "1", *glass)
    assert code == 2 and "--as OWNER" in err
    code, _, err = cli("incident", "approve", "1", *glass, "--as", "marco")
    assert code == 1 and "refused: only jordan may approve incident #1" in err
    code, _, err = cli("incident", "approve", "9", *glass, "--as", "jordan")
    assert code == 1 and "incident #9 does not exist" in err
    code, out, _ = cli("incident", "approve", "1", *glass, "--as", "jordan")
    assert code == 0 and out.rstrip().endswith("(break-glass))"), out
    [decision] = asyncio.run(_rows(db_url, ContainmentDecision))
    assert (decision.decision, decision.owner_id) == ("approve", "jordan")
    assert decision.identity.startswith("break-glass:")
    code, _, err = cli("incident", "deny", "1", *glass, "--as", "jordan")  # decided already
    assert code == 1 and "containment approved by jordan" in err
    code, _, err = cli("incident", "release", "1", *glass, "--as", "jordan")
    assert code == 1 and "no quarantine in effect" in err
    entries = [(e.kind, e.actor) for e in asyncio.run(_rows(db_url, TimelineEntry))]
    assert ("refused", "unauthorised") in entries and ("containment_approve", "jordan") in entries


def test_a_release_needs_a_quarantine_in_effect_and_the_approver(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    asyncio.run(_open(db_url, tmp_path))

    async def quarantine_done() -> None:
        async with running(Settings(database_url=db_url, notifiers="console")) as responder, \
                responder.store.sessions.begin() as s:
            [step] = (await s.execute(select(ContainmentStep))).scalars()
            step.action, step.status = "quarantine_agent", "done"

    asyncio.run(quarantine_done())
    glass = ["--database-url", db_url]
    code, _, err = cli("incident", "release", "1", *glass, "--as", "iam-team")
    assert code == 1 and "refused" in err
    code, out, _ = cli("incident", "release", "1", *glass, "--as", "jordan")
    assert code == 0 and "release of incident #1 recorded" in out, out
    code, _, err = cli("incident", "release", "1", *glass, "--as", "jordan")
    assert code == 1 and "already recorded" in err
    release = [r for r in asyncio.run(_rows(db_url, ContainmentStep)) if r.action == "release"]
    assert [(r.status, r.decided_by, r.detail["via"]) for r in release] == [("approved", "jordan", "break-glass")]


def test_a_postgresql_database_that_does_not_exist_is_one_line_and_exit_4(postgres_admin_url: str) -> None:
    from tests.support.pg_server import sqlalchemy_url

    url = sqlalchemy_url(postgres_admin_url, f"warden_missing_{uuid.uuid4().hex[:8]}")
    for args in (["incidents", "list"], ["audit", "verify"]):
        code, out, err = cli(*args, "--database-url", url)
        assert code == 4 and out == "" and err.startswith("warden: cannot reach the database ")
        assert "does not exist" in err and err.count("\n") == 1


async def test_a_url_that_is_not_the_incident_api_is_one_line_and_exit_4() -> None:
    from aiohttp import web

    async def login_page(_: web.Request) -> web.Response:
        return web.Response(text="<html>a login page</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/incidents", login_page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        # the ignore below: aiohttp's private _server is None only before start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        code, out, err = await acli("incidents", "list", env=api(f"http://127.0.0.1:{port}", TEAM_TOKEN))
    finally:
        await runner.cleanup()
    assert code == 4 and out == "" and "not a JSON answer: is this Warden's incident API?" in err
    assert err.count("\n") == 1
