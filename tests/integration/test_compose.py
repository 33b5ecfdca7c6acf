"""docker-compose.yml, as far as a machine with no Docker engine can check it: the Compose Specification's JSON
schema accepts it, every WARDEN_* it sets is a setting Warden reads, the topics step creates what the workers
need, Prometheus scrapes both workers where they listen; and its Warden settings (two workers in one group on
PostgreSQL, the topics as the one-shot step creates them, the demo-producer's command) run on Apache Kafka."""

from __future__ import annotations

import asyncio
import copy
import importlib.resources
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.fernet import Fernet

from service.runtime import catalogue
from service.runtime.settings import Settings
from service.runtime.topics import topic_configs, topic_names
from tests.support.incident_db import database_url
from tests.support.incident_helpers import eventually
from tests.support.kafka_helpers import read_topic
from warden import __version__

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
WORKERS = ("warden-1", "warden-2")
ISSUE_13 = ("deploy/prometheus/alerts.yml", "deploy/grafana/warden.json")  # the alert rules and the dashboard
KNOWN = {f"WARDEN_{f.upper()}" for f in Settings.model_fields}


def _compose() -> dict[str, Any]:
    # PyYAML resolves the `<<: *warden-worker` merges as Compose does
    return cast(dict[str, Any], yaml.safe_load(COMPOSE.read_text()))  # a YAML mapping


def _schema() -> dict[str, Any]:
    """The Compose Specification's schema as check-jsonschema vendors it (a kept, pinned copy; no network)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return cast(dict[str, Any], json.loads(vendor.joinpath("compose-spec.json").read_text()))  # a JSON Schema


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, enough for this file."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m[1], m[2], m[3]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def _env(service: str, env: dict[str, str]) -> dict[str, str]:
    raw = _compose()["services"][service].get("environment", {})
    return {k: _interpolate(str(v), env) for k, v in raw.items()}


def _topics_step() -> list[tuple[str, int, dict[str, str]]]:
    """(topic, partitions, configs) of each `create NAME PARTITIONS [KEY=VALUE]` line of the one-shot step."""
    script = "\n".join(_compose()["services"]["topics"]["command"])
    found = re.findall(r"^\s*create (\S+) (\d+)(?: (\S+))?$", script, re.M)
    return [(name, int(n), dict([cfg.split("=", 1)]) if cfg else {}) for name, n, cfg in found]


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as a worker reads them from this environment."""
    for k in [k for k in os.environ if k.startswith("WARDEN_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return Settings()


def test_the_compose_specification_schema_accepts_the_file_and_rejects_a_misspelt_key() -> None:
    schema, compose = _schema(), _compose()
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)
    broken = copy.deepcopy(compose)
    broken["services"]["warden-1"]["depend_on"] = broken["services"]["warden-1"].pop("depends_on")
    with pytest.raises(jsonschema.ValidationError, match="depend_on"):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_every_warden_variable_set_is_a_setting_warden_reads() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        unknown = {k for k in service.get("environment", {}) if k.startswith("WARDEN_")} - KNOWN
        assert unknown == set(), f"{name} sets variables no setting reads: {unknown}"
    worker = set(services["warden-1"]["environment"])
    assert {"WARDEN_KAFKA_BOOTSTRAP", "WARDEN_DATABASE_URL", "WARDEN_SEAL_KEY"} <= worker


def test_two_workers_in_one_group_on_postgres_with_one_seal_key_start_after_kafka_postgres_and_the_topics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    env = {"WARDEN_SEAL_KEY": Fernet.generate_key().decode()}
    one, two = (_env(w, env) for w in WORKERS)
    assert one == two  # the same group, topics, database and seal key
    settings = _settings(one, monkeypatch)
    assert settings.kafka_bootstrap == "kafka:19092" and settings.app_id == "warden"
    assert settings.effective_database_url.startswith("postgresql+asyncpg://warden:warden@postgres:5432/")
    settings.sealer()  # a valid Fernet key, from the one variable
    with pytest.raises(KeyError, match="WARDEN_SEAL_KEY"):
        _env("warden-1", {})  # no silent default: compose refuses to start without the shared key
    for w in WORKERS:
        assert services[w]["depends_on"] == {"kafka": {"condition": "service_healthy"},
                                             "postgres": {"condition": "service_healthy"},
                                             "topics": {"condition": "service_completed_successfully"}}
        assert services[w]["read_only"] is True and services[w]["image"] == f"warden-incident-response:{__version__}"
        assert "./warden/examples/policy:/etc/warden/policy:ro" in services[w]["volumes"]
    for dependency in ("kafka", "postgres"):
        assert services[dependency]["healthcheck"]["test"]
    kafka_version = re.search(r"<kafka.version>(.+)</kafka.version>",
                              (REPO / "tests/support/kafka/pom.xml").read_text())
    assert kafka_version and services["kafka"]["image"] == f"apache/kafka:{kafka_version[1]}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_the_mounted_policy_is_valid() -> None:
    source = next(v.split(":")[0] for v in _compose()["services"]["warden-1"]["volumes"] if v.endswith(":ro"))
    assert catalogue.load(REPO / source).sha256  # raises PolicyError with each located problem otherwise


def test_the_topics_step_creates_every_topic_the_workers_use_with_their_partitions_and_configs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(_env("warden-1", {"WARDEN_SEAL_KEY": Fernet.generate_key().decode()}), monkeypatch)
    created = _topics_step()
    assert [t for t, _, _ in created] == topic_names(settings)
    assert {n for _, n, _ in created} == {settings.topic_partitions} and settings.topic_partitions >= len(WORKERS)
    configs = topic_configs(settings)
    assert {t: c for t, _, c in created if c} == configs
    assert _compose()["services"]["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def test_prometheus_scrapes_both_workers_on_their_web_port_and_loads_the_alert_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    key = {"WARDEN_SEAL_KEY": Fernet.generate_key().decode()}
    ports = {w: _settings(_env(w, key), monkeypatch).web_port for w in WORKERS}
    assert targets == {f"{w}:{port}" for w, port in ports.items()}
    for w, port in ports.items():
        published = {p.split(":")[1] for p in services[w]["ports"]}
        assert published == {str(port)}, f"{w} publishes {published}, listens on {port}"
    mounts = dict(v.rsplit(":", 2)[:2] for v in services["prometheus"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/prometheus/alerts.yml"] in prometheus["rule_files"]
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"


def test_grafana_provisions_prometheus_and_the_dashboard_folder_the_compose_file_mounts() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"] if v.startswith("./"))
    provisioning = REPO / "deploy/grafana/provisioning"
    [provider] = yaml.safe_load((provisioning / "dashboards/warden.yml").read_text())["providers"]
    assert Path(mounts["./deploy/grafana/warden.json"]).parent == Path(provider["options"]["path"])
    [source] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"


def test_every_mounted_file_exists_except_the_dashboard_and_alert_rules_of_issue_13() -> None:
    services = _compose()["services"]
    sources = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", []) if v.startswith("./")}
    missing = {s.removeprefix("./") for s in sources if not (REPO / s).exists()}
    assert missing <= set(ISSUE_13), missing


def test_the_demo_producer_is_a_profile_that_sends_the_scenario_to_the_workers_topic() -> None:
    services = _compose()["services"]
    producer = services["demo-producer"]
    assert producer["profiles"] == ["demo-producer"] and producer["command"] == ["demo", "--send-only"]
    env = producer["environment"]
    assert env["WARDEN_KAFKA_BOOTSTRAP"] == services["warden-1"]["environment"]["WARDEN_KAFKA_BOOTSTRAP"]
    assert env["WARDEN_TOPIC_ACTIVITY"] == _topics_step()[0][0]


# -- the topology on Apache Kafka ----------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.apache_kafka
async def test_the_compose_topology_runs_two_workers_sharing_the_partitions_on_apache_kafka_and_postgres(
    kafka_bootstrap: str, postgres_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' environment from the file, with only what a host cannot share with containers replaced: the
    broker and database addresses (the suite's), the policy path (the mount's source), the data dirs and ports,
    and a run suffix on the topics and group so that no other test's records are read."""
    from sqlalchemy import func, select

    from responders.db import make_engine, session_factory
    from responders.db.models import FindingRecord, Incident
    from service.runtime.worker import Runtime

    run = uuid.uuid4().hex[:8]
    rename = {t: f"{t}.{run}" for t, _, _ in _topics_step()}
    async with database_url("postgresql", tmp_path, postgres_admin_url) as db_url:
        env = _env("warden-1", {"WARDEN_SEAL_KEY": Fernet.generate_key().decode()})
        env |= {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, "WARDEN_DATABASE_URL": db_url,
                "WARDEN_POLICY": str(REPO / "warden/examples/policy"), "WARDEN_WEB_BIND": "127.0.0.1:0",
                "WARDEN_APP_ID": f"warden-compose-{run}", "WARDEN_KAFKA_SESSION_TIMEOUT_S": "6",
                "WARDEN_KAFKA_HEARTBEAT_INTERVAL_S": "1", "WARDEN_KAFKA_REBALANCE_TIMEOUT_S": "3"}
        env |= {f"WARDEN_TOPIC_{k}": rename[Settings.model_fields[f"topic_{k.lower()}"].default]
                for k in ("ACTIVITY", "FINDINGS", "DLQ", "CONTROL", "REVOCATIONS", "OTLP",
                          "APPROVAL_REQUESTS", "APPROVAL_DECISIONS", "APPROVAL_DLQ")}
        one = _settings(env | {"WARDEN_DATA_DIR": str(tmp_path / "w1")}, monkeypatch)
        two = one.model_copy(update={"data_dir": tmp_path / "w2"})
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)  # the one-shot step, as it is written
        await admin.start()
        try:
            await admin.create_topics([NewTopic(rename[t], num_partitions=n, replication_factor=1, topic_configs=c)
                                       for t, n, c in _topics_step()])
        finally:
            await admin.close()
        async with Runtime(one) as w1, Runtime(two) as w2:
            assert w1.ingest is not None and w2.ingest is not None
            activity = one.topic_activity

            def shares() -> tuple[set[int], set[int]] | None:  # the batch ingest's group holds the activity topic
                assert w1.ingest is not None and w2.ingest is not None
                a = {tp.partition for tp in w1.ingest.assignment() if tp.topic == activity}
                b = {tp.partition for tp in w2.ingest.assignment() if tp.topic == activity}
                return (a, b) if a and b and not a & b and len(a | b) == one.topic_partitions else None

            a, b = await eventually(shares, 60, "both workers holding activity partitions")
            producer_env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
            producer_env |= _env("demo-producer", {}) | {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                                         "WARDEN_TOPIC_ACTIVITY": activity,
                                                         "WARDEN_TOPIC_OTLP": one.topic_otlp}  # its spans too
            command = _compose()["services"]["demo-producer"]["command"]
            sent = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "service", *command],
                                           env=producer_env, cwd=tmp_path, capture_output=True, text=True,
                                           timeout=120, check=False)
            assert sent.returncode == 0, sent.stderr
            plan = json.loads(sent.stdout.strip().splitlines()[-1])
            # Every malformed message, the oversized one too (the topics' max.message.bytes), is dead-lettered.
            dead = await read_topic(kafka_bootstrap, one.topic_dlq, expect=plan["invalid"], timeout=60)
            assert len(dead) == plan["invalid"]

            engine = make_engine(db_url)

            async def recorded() -> tuple[int, int] | None:
                async with session_factory(engine)() as s:
                    findings = (await s.execute(select(func.count()).select_from(FindingRecord))).scalar_one()
                    incidents = (await s.execute(select(func.count()).select_from(Incident))).scalar_one()
                return (findings, incidents) if findings and incidents else None

            try:
                findings, incidents = await eventually(recorded, 60, "findings and incidents in PostgreSQL")
            finally:
                await engine.dispose()
        print(f"\nactivity partitions: worker 1 {sorted(a)}, worker 2 {sorted(b)}; sent {plan}; "
              f"dead letters {len(dead)}; findings {findings}, incidents {incidents} in PostgreSQL")


def test_the_demo_producer_without_a_broker_says_which_variable_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    out = subprocess.run([sys.executable, "-m", "service", *_compose()["services"]["demo-producer"]["command"]],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == "warden: --send-only needs WARDEN_KAFKA_BOOTSTRAP: the workers' Kafka"
