"""Secured Kafka (issue 30): TLS and SASL settings reach every Kafka client Warden makes, through one builder
(service/runtime/kafka_access.py), and never show a secret. The `secured_kafka` tests run against an Apache Kafka
whose only client listener is SASL_SSL (tests/support/kafka/pytest_on_secured_kafka.sh, in .ci/run): a wrong password or
an untrusted certificate stops start-up within seconds, in one line."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials

from service.cli.exits import Exit
from service.demo import oauth_server
from service.runtime.kafka_access import ClientCredentialsToken, KafkaAccess, OAuthTokenError
from service.runtime.settings import Settings
from service.runtime.topics import BrokerUnreachable, ensure_topics
from tests.support.kafka_helpers import event, produce_events, read_topic
from tests.support.kafka_security import SECURITY_ENV, kafka_security, security_env

REPO = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient"}
PASSWORD = "s3cret-password-never-logged-000"


# -- one builder for every client ---------------------------------------------------------------------------------


def _calls(path: Path) -> list[tuple[int, str, set[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            found.append((node.lineno, name, {k.arg for k in node.keywords if k.arg}))
    return found


def test_every_kafka_client_of_warden_is_built_by_kafka_access() -> None:
    """No module but kafka_access.py constructs an aiokafka client, and the faust app gets the same credentials:
    a client made elsewhere would connect without the cluster's TLS and SASL. (warden.client, the reference client
    that gateways embed, takes aiokafka's keywords from its caller instead.)"""
    builder = REPO / "service" / "runtime" / "kafka_access.py"
    stray, apps = [], []
    for package in ("warden", "streams", "responders", "playbooks", "service"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == builder or "client" in path.relative_to(REPO).parts[:2]:
                continue
            for line, name, keywords in _calls(path):
                where = f"{path.relative_to(REPO)}:{line}"
                if name in CLIENTS:
                    stray.append(where)
                if name == "App":
                    apps.append((where, keywords))
    assert stray == [], "Kafka clients built outside service/runtime/kafka_access.py"
    assert apps and all("broker_credentials" in kw for _, kw in apps), apps


def _settings(**security: object) -> Settings:
    # the ignore below: security options by their Settings field names
    return Settings(kafka_bootstrap="kafka-1:9093,kafka-2:9093", **security)  # type: ignore[arg-type]


async def test_scram_over_tls_gives_every_client_and_faust_the_same_security(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # as a mounted Secret often is: the newline is not part of it
    s = _settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                  kafka_sasl_username="warden", kafka_sasl_password_file=secret)
    kafka = KafkaAccess.from_settings(s)
    options = kafka.client_options()
    assert options["bootstrap_servers"] == "kafka-1:9093,kafka-2:9093"
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "warden" and options["sasl_plain_password"] == PASSWORD
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED and options["ssl_context"].check_hostname
    admin = kafka.admin()
    assert isinstance(admin, AIOKafkaAdminClient)
    credentials = kafka.faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert PASSWORD not in repr(kafka) + repr(s) + repr(credentials)


def test_plain_over_plaintext_ssl_alone_and_no_security() -> None:
    plain = KafkaAccess.from_settings(_settings(kafka_security_protocol="SASL_PLAINTEXT",
                                                kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u",
                                                kafka_sasl_password=PASSWORD))
    assert plain.client_options()["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_context" not in plain.client_options()
    faust_plain = plain.faust_credentials()
    assert isinstance(faust_plain, SASLCredentials) and faust_plain.protocol.value == "SASL_PLAINTEXT"
    tls = KafkaAccess.from_settings(_settings(kafka_security_protocol="SSL"))
    assert "sasl_mechanism" not in tls.client_options()
    assert isinstance(tls.faust_credentials(), SSLCredentials)
    none = KafkaAccess.from_settings(_settings())
    assert none.client_options() == {"bootstrap_servers": "kafka-1:9093,kafka-2:9093",
                                     "security_protocol": "PLAINTEXT"}
    assert none.faust_credentials() is None


def test_the_embedded_broker_is_plaintext_whatever_the_settings_say() -> None:
    kafka = KafkaAccess.from_settings(Settings(), "127.0.0.1:5000")
    assert kafka.client_options() == {"bootstrap_servers": "127.0.0.1:5000", "security_protocol": "PLAINTEXT"}


def test_oauthbearer_uses_a_client_credentials_token_provider() -> None:
    kafka = KafkaAccess.from_settings(_settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER",
        kafka_oauth_token_url="https://idp.example/oauth/token", kafka_oauth_client_id="warden",
        kafka_oauth_client_secret=PASSWORD))
    options = kafka.client_options()
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(options["sasl_oauth_token_provider"], ClientCredentialsToken)
    assert "sasl_plain_password" not in options
    credentials = kafka.faust_credentials()
    assert isinstance(credentials, OAuthCredentials) and credentials.protocol.value == "SASL_SSL"
    assert PASSWORD not in repr(options["sasl_oauth_token_provider"]) + repr(kafka)


async def test_the_oauth_token_comes_from_the_token_endpoint_and_is_reused(
        oauth_issuer: oauth_server.OAuthServer) -> None:
    """Against the real OAuth server (oidc-provider): the client credentials grant, one fetch for many
    connections, and a wrong secret refused with the client named and the secret not."""
    provider = ClientCredentialsToken(oauth_issuer.token_endpoint, oauth_issuer.agent_client_id,
                                      oauth_issuer.agent_client_secret)
    first = await provider.token()
    assert first and first == await provider.token()
    wrong = ClientCredentialsToken(oauth_issuer.token_endpoint, oauth_issuer.agent_client_id, PASSWORD)
    with pytest.raises(OAuthTokenError) as refused:
        await wrong.token()
    assert oauth_issuer.agent_client_id in str(refused.value) and PASSWORD not in str(refused.value)


# -- against the SASL_SSL Apache Kafka ----------------------------------------------------------------------------

def secured(test: object) -> object:
    """Needs the SASL_SSL broker (deselected without it); uses the broker, so an integration test too."""
    return pytest.mark.integration(pytest.mark.secured_kafka(test))


def _material() -> Path:
    return Path(os.environ[SECURITY_ENV]).parent


def _warden(*args: str, env: dict[str, str], timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], float]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")} | env
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, env=full,
                         cwd=REPO, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    return out, time.monotonic() - started


@secured
async def test_the_secured_broker_refuses_a_client_without_its_security(kafka_bootstrap: str) -> None:
    """What makes the rest of this run mean something: a plaintext client gets nowhere."""
    with pytest.raises(BrokerUnreachable, match="WARDEN_KAFKA_SECURITY_PROTOCOL"):
        await ensure_topics(kafka_bootstrap, ["never-created"], 1, timeout=10)


@secured
def test_a_wrong_password_stops_start_up_within_seconds_in_one_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, **security_env(), "WARDEN_KAFKA_SASL_PASSWORD": PASSWORD,
           "WARDEN_DATA_DIR": str(tmp_path), "WARDEN_WEB_BIND": "127.0.0.1:0"}
    del env["WARDEN_KAFKA_SASL_PASSWORD_FILE"]
    out, took = _warden("run", env=env)
    assert out.returncode == Exit.INVALID_INPUT, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Authentication failed" in lines[0] and "WARDEN_KAFKA_SASL_PASSWORD" in lines[0], lines[0]
    assert PASSWORD not in out.stderr + out.stdout
    assert took < 15, f"{took:.1f}s"


@secured
def test_an_untrusted_broker_certificate_stops_start_up_within_seconds_in_one_line(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, **security_env(),
           "WARDEN_KAFKA_SSL_CAFILE": str(_material() / "tls" / "rogue-ca.pem"),
           "WARDEN_DATA_DIR": str(tmp_path), "WARDEN_WEB_BIND": "127.0.0.1:0"}
    out, took = _warden("run", env=env)
    assert out.returncode == Exit.INVALID_INPUT, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in lines[0] and "WARDEN_KAFKA_SSL_CAFILE" in lines[0], lines[0]
    assert took < 15, f"{took:.1f}s"


@secured
async def test_the_clis_kafka_clients_use_the_security_too(kafka_bootstrap: str, worker_settings: Settings) -> None:
    """`warden demo --send-only` (a producer) and `warden dlq replay` (a consumer and a producer) on the secured
    broker, as compose's demo-producer and an operator would run them, next to a worker."""
    from service.runtime.worker import Runtime

    s = worker_settings
    topics = {f"WARDEN_TOPIC_{name.upper()}": getattr(s, f"topic_{name}") for name in
              ("activity", "findings", "dlq", "control", "revocations", "approval_requests", "approval_decisions",
               "approval_dlq", "otlp")}
    env = {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, **security_env(), **topics, "WARDEN_APP_ID": s.app_id,
           "WARDEN_DATA_DIR": str(s.data_dir),  # shared with the worker, so its generated seal key too
           "WARDEN_KAFKA_SESSION_TIMEOUT_S": "6", "WARDEN_KAFKA_HEARTBEAT_INTERVAL_S": "1",
           "WARDEN_KAFKA_REBALANCE_TIMEOUT_S": "3"}
    async with Runtime(s):
        sent, _ = await asyncio.to_thread(_warden, "demo", "--send-only", env=env)
        assert sent.returncode == 0, sent.stderr
        summary = json.loads(sent.stdout.strip().splitlines()[-1])
        assert summary["messages"] > 0 and summary["invalid"] > 0
        await read_topic(kafka_bootstrap, s.topic_dlq, expect=summary["invalid"], timeout=60)
        replayed, _ = await asyncio.to_thread(_warden, "dlq", "replay", "--dry-run", "--output", "json", "--group",
                                              f"replay-{uuid.uuid4().hex[:6]}", env=env)
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["summary"]["read"] >= summary["invalid"]


@secured
async def test_a_worker_on_the_secured_broker_turns_an_event_into_a_finding(worker: object) -> None:
    from service.runtime.worker import Runtime

    assert isinstance(worker, Runtime) and worker.kafka is not None
    assert worker.kafka.security_protocol == kafka_security()["kafka_security_protocol"] == "SASL_SSL"
    s = worker.settings
    bad = event("unknown-agent-" + uuid.uuid4().hex[:6], tool={"name": "kb.search", "arguments": {}})
    await produce_events(worker.bootstrap, s.topic_activity, [bad])
    findings = await read_topic(worker.bootstrap, s.topic_findings, expect=1, timeout=60)
    assert json.loads(findings[0].value)["rule"] == "unowned_agent"


def test_the_commented_secured_kafka_example_in_compose_is_a_valid_configuration(tmp_path: Path) -> None:
    """Uncommented, compose's example names only real settings and they validate together (with its secret files
    in place)."""
    import re

    lines = re.findall(r"^\s*# (WARDEN_KAFKA_[A-Z_]+): (\S+)", (REPO / "docker-compose.yml").read_text(), re.M)
    example = dict(lines)
    assert {"WARDEN_KAFKA_SECURITY_PROTOCOL", "WARDEN_KAFKA_SASL_PASSWORD_FILE",
            "WARDEN_KAFKA_SSL_CAFILE"} <= set(example)
    from tests.support.kafka.secured_material import make

    material = make(tmp_path)
    example["WARDEN_KAFKA_SASL_PASSWORD_FILE"] = material["kafka_sasl_password_file"]
    example["WARDEN_KAFKA_SSL_CAFILE"] = material["kafka_ssl_cafile"]
    fields = {name.removeprefix("WARDEN_").lower(): value for name, value in example.items()}
    assert set(fields) <= set(Settings.model_fields)
    kafka = KafkaAccess.from_settings(Settings(**fields))
    assert kafka.client_options()["security_protocol"] == "SASL_SSL"
