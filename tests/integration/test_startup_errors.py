"""Every bad setting stops `warden run` with one line naming the variable and the reason, exit 2, no traceback,
and never the secret it was given (issue 30: these used to be tracebacks, or a port error after 13 s).

The table of bad settings runs the CLI in this process (click's CliRunner: a process start costs about 1.3 s of CPU
each); two of its cases also run as a real process and must print the same line, and the tests after the table
(a CA bundle that is not PEM, a policy's secret reference, a web port in use) run as real processes only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from service.cli.exits import Exit

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-not-for-logs-0123456789"


def _run(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")} | env
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "service", "run", *args], capture_output=True, text=True, env=full,
                         cwd=REPO, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    return out, time.monotonic() - started


def _in_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`warden run` in this process, with no WARDEN_* variable but `env`: the same result a process would give."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("WARDEN_")}
    result = CliRunner().invoke(main, ["run"], env={**unset, **env})
    assert isinstance(result.exception, SystemExit), result.exception  # an exception is a traceback in a process
    return subprocess.CompletedProcess(["warden", "run"], result.exit_code, result.stdout, result.stderr)


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == Exit.INVALID_INPUT, (out.returncode, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and lines[0].startswith("warden: "), out.stderr
    assert SECRET not in out.stderr + out.stdout
    return lines[0]


@pytest.fixture
def not_pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("not a certificate\n")
    return path


BOOT = {"WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1"}  # never reached: every case fails before any connection
CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    "seal key format": ({"WARDEN_SEAL_KEY": "abc"}, ["WARDEN_SEAL_KEY", "32 url-safe base64"]),
    "postgresql without driver": ({"WARDEN_DATABASE_URL": f"postgresql://warden:{SECRET}@db/warden"},
                                  ["WARDEN_DATABASE_URL", "postgresql+asyncpg://"]),
    "unknown database scheme": ({"WARDEN_DATABASE_URL": "mongodb://db/warden"},
                                ["WARDEN_DATABASE_URL", "unknown database 'mongodb'"]),
    "not a URL": ({"WARDEN_DATABASE_URL": "warden.db"}, ["WARDEN_DATABASE_URL", "not a database URL"]),
    "sqlite sync driver": ({"WARDEN_DATABASE_URL": "sqlite:///x.db"}, ["WARDEN_DATABASE_URL", "sqlite+aiosqlite"]),
    "database unreachable": ({"WARDEN_DATABASE_URL": f"postgresql+asyncpg://warden:{SECRET}@127.0.0.1:1/warden"},
                             ["WARDEN_DATABASE_URL", "cannot connect to", "ConnectionRefusedError"]),
    "type": ({"WARDEN_TOPIC_PARTITIONS": "four"}, ["WARDEN_TOPIC_PARTITIONS", "integer"]),
    "range": ({"WARDEN_POLICY_RELOAD_S": "0"}, ["WARDEN_POLICY_RELOAD_S", "greater than 0"]),
    "web bind format": ({"WARDEN_WEB_BIND": "6066"}, ["WARDEN_WEB_BIND", "not host:port"]),
    "log format": ({"WARDEN_LOG_FORMAT": "xml"}, ["WARDEN_LOG_FORMAT", "json or text"]),
    "otlp export endpoint": ({"WARDEN_OTLP_EXPORT_ENDPOINT": "otel-collector:4318"},
                             ["WARDEN_OTLP_EXPORT_ENDPOINT", "http:// or https://"]),
    "otlp export credentials": ({"WARDEN_OTLP_EXPORT_ENDPOINT": f"http://warden:{SECRET}@otel-collector:4318"},
                                ["WARDEN_OTLP_EXPORT_ENDPOINT", "must not hold credentials"]),
    "unknown notifier": ({"WARDEN_NOTIFIERS": "pager"}, ["WARDEN_NOTIFIERS", "pager"]),
    "notifier without its settings": ({"WARDEN_NOTIFIERS": "webhook"},
                                      ["WARDEN_NOTIFIERS", "WARDEN_WEBHOOK_URL", "WARDEN_WEBHOOK_SECRET_FILE"]),
    "notifier setting of a package": ({"WARDEN_WEBHOOK_URL": f"https://warden:{SECRET}@hooks.example.net/in"},
                                      ["WARDEN_WEBHOOK_URL", "must not hold credentials"]),
    "api token format": ({"WARDEN_API_TOKENS": SECRET}, ["WARDEN_API_TOKENS"]),
    "misspelt variable": ({"WARDEN_KAFKA_BOOTSTRAPS": "kafka:9092"},
                          ["WARDEN_KAFKA_BOOTSTRAPS", "did you mean WARDEN_KAFKA_BOOTSTRAP?"]),
    "no bootstrap, no --embedded": ({}, ["WARDEN_KAFKA_BOOTSTRAP", "--embedded"]),
    "unknown security protocol": ({"WARDEN_KAFKA_SECURITY_PROTOCOL": "TLS"}, ["WARDEN_KAFKA_SECURITY_PROTOCOL"]),
    "SASL without mechanism": ({"WARDEN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, ["WARDEN_KAFKA_SASL_MECHANISM"]),
    "SCRAM without user": ({"WARDEN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "WARDEN_KAFKA_SASL_MECHANISM":
                            "SCRAM-SHA-512", "WARDEN_KAFKA_SASL_PASSWORD": SECRET}, ["WARDEN_KAFKA_SASL_USERNAME"]),
    "SCRAM without password": ({"WARDEN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "WARDEN_KAFKA_SASL_MECHANISM":
                                "SCRAM-SHA-256", "WARDEN_KAFKA_SASL_USERNAME": "w"}, ["WARDEN_KAFKA_SASL_PASSWORD"]),
    "password twice": ({"WARDEN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "WARDEN_KAFKA_SASL_MECHANISM": "PLAIN",
                        "WARDEN_KAFKA_SASL_USERNAME": "w", "WARDEN_KAFKA_SASL_PASSWORD": SECRET,
                        "WARDEN_KAFKA_SASL_PASSWORD_FILE": __file__}, ["WARDEN_KAFKA_SASL_PASSWORD_FILE", "set one"]),
    "password file missing": ({"WARDEN_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/kafka-password"},
                              ["WARDEN_KAFKA_SASL_PASSWORD_FILE", "not a readable file"]),
    "password file a folder": ({"WARDEN_KAFKA_SASL_PASSWORD_FILE": str(REPO)},
                               ["WARDEN_KAFKA_SASL_PASSWORD_FILE", "not a readable file"]),
    "OAUTHBEARER without token URL": ({"WARDEN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                       "WARDEN_KAFKA_SASL_MECHANISM": "OAUTHBEARER"},
                                      ["WARDEN_KAFKA_OAUTH_TOKEN_URL"]),
    "CA bundle with PLAINTEXT": ({"WARDEN_KAFKA_SSL_CAFILE": __file__}, ["WARDEN_KAFKA_SSL_CAFILE", "PLAINTEXT"]),
    "certificate without key": ({"WARDEN_KAFKA_SECURITY_PROTOCOL": "SSL", "WARDEN_KAFKA_SSL_CERTFILE": __file__},
                                ["WARDEN_KAFKA_SSL_KEYFILE"]),
}


def _env(case: str) -> dict[str, str]:
    return {**({} if case.startswith("no bootstrap") else BOOT), **CASES[case][0]}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_setting_is_one_line_naming_the_variable_and_exit_2(case: str) -> None:
    line = _one_line(_in_process(_env(case)))
    for part in CASES[case][1]:
        assert part in line, line


@pytest.mark.parametrize("case", ["SCRAM without user", "database unreachable"])
def test_a_real_process_prints_the_same_line_as_the_cli_run_in_process(case: str) -> None:
    line = _one_line(_run(_env(case))[0])
    assert line == _one_line(_in_process(_env(case)))


def test_a_ca_bundle_that_is_not_pem_is_named(not_pem: Path) -> None:
    env = {**BOOT, "WARDEN_KAFKA_SECURITY_PROTOCOL": "SSL", "WARDEN_KAFKA_SSL_CAFILE": str(not_pem)}
    line = _one_line(_run(env)[0])
    assert "WARDEN_KAFKA_SSL_CAFILE" in line and "not a PEM CA bundle" in line, line


def test_a_policy_secret_reference_is_not_an_unknown_variable(tmp_path: Path) -> None:
    """The example policy reads `env:WARDEN_IDP_CLIENT_SECRET`: that variable is the operator's, not a typo."""
    out, _ = _run({**BOOT, "WARDEN_IDP_CLIENT_SECRET": SECRET, "WARDEN_DATA_DIR": str(tmp_path),
                   "WARDEN_WEB_BIND": "127.0.0.1:0"}, timeout=90)
    line = _one_line(out)
    assert "cannot reach Kafka" in line and "WARDEN_IDP_CLIENT_SECRET" not in line, line


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_web_port_in_use_fails_at_once_naming_the_variable(taken_port: int, tmp_path: Path) -> None:
    out, _ = _run({**BOOT, "WARDEN_WEB_BIND": f"127.0.0.1:{taken_port}", "WARDEN_DATA_DIR": str(tmp_path)})
    line = _one_line(out)  # BOOT's Kafka cannot be reached: a port checked after it would fail on Kafka instead
    assert f"WARDEN_WEB_BIND: 127.0.0.1:{taken_port} is in use" in line, line
    assert not list(tmp_path.glob("*.db*")), "checked before the database was opened too (no time bound: CI is loaded)"
