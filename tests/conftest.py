"""Shared fixtures: a real Kafka-protocol broker (Tansu, or WARDEN_TEST_KAFKA_BOOTSTRAP) and worker settings,
plus the incident database (SQLite, and PostgreSQL started by the suite unless WARDEN_TEST_DATABASE_URL is set),
the local Slack Web API and the OAuth server (oidc-provider, tests/support/oauth_fixture.py)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.demo.slack_api_server import SlackApiServer
from service.runtime.broker import EmbeddedBroker, EmbeddedBrokerError
from service.runtime.settings import BUNDLED_POLICY, Settings
from service.runtime.worker import Runtime
from tests.support.incident_db import BACKENDS, Templates, database_url
from tests.support.kafka_security import SECURITY_ENV, kafka_security
from tests.support.oauth_fixture import oauth_issuer  # noqa: F401  (a session fixture: importing it here registers it)
from tests.support.pg_server import private_postgres

REPO = Path(__file__).resolve().parent.parent
KAFKA_ENV = "WARDEN_TEST_KAFKA_BOOTSTRAP"
_UNMARKED = pytest.StashKey[list[str]]()
_DESELECTED = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_UNMARKED] = []
    config.stash[_DESELECTED] = 0  # the markers themselves are registered in pyproject.toml


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every test that reaches the broker must be selected by `-m integration`, which CI runs on Apache Kafka."""
    if "kafka_bootstrap" in getattr(item, "fixturenames", ()) and item.get_closest_marker("integration") is None:
        item.config.stash[_UNMARKED].append(item.nodeid)


@pytest.hookimpl(trylast=True)  # after -m/-k: count only the tests this run would otherwise have run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = config.stash[_UNMARKED]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the broker (fixture kafka_bootstrap) but are not marked integration, so the "
            "Apache Kafka run in .ci/run would miss them; add `pytestmark = pytest.mark.integration`:\n  "
            + "\n  ".join(unmarked)
        )
    if not os.environ.get(SECURITY_ENV):  # the SASL_SSL tests run only in the secured run (.ci/run)
        secured = [item for item in items if item.get_closest_marker("secured_kafka")]
        if secured:
            items[:] = [item for item in items if not item.get_closest_marker("secured_kafka")]
            config.hook.pytest_deselected(items=secured)
    if os.environ.get(KAFKA_ENV):
        return
    apache_only = [item for item in items if item.get_closest_marker("apache_kafka")]
    if apache_only:
        items[:] = [item for item in items if not item.get_closest_marker("apache_kafka")]
        config.hook.pytest_deselected(items=apache_only)
        config.stash[_DESELECTED] = len(apache_only)
        if hasattr(config, "workeroutput"):  # a pytest-xdist worker: its controller prints the summary line
            config.workeroutput["apache_kafka_deselected"] = len(apache_only)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: each worker collects the same items, so take one count
def pytest_testnodedown(node: object, error: object) -> None:
    output = getattr(node, "workeroutput", None) or {}
    config = node.config  # type: ignore[attr-defined]  # xdist's WorkerController, taken as object here
    config.stash[_DESELECTED] = max(config.stash.get(_DESELECTED, 0), output.get("apache_kafka_deselected", 0))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    n = config.stash.get(_DESELECTED, 0)
    if n:
        terminalreporter.write_line(
            f"{n} apache_kafka test(s) deselected: they need Apache Kafka and {KAFKA_ENV} is unset "
            "(Tansu cannot run them); .ci/run runs them against Apache Kafka via "
            "tests/support/kafka/pytest_on_apache_kafka.sh",
            yellow=True,
            bold=True,
        )


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker for the session: Apache Kafka when WARDEN_TEST_KAFKA_BOOTSTRAP is set, else Tansu. Under
    pytest-xdist the session is one worker process's, so each worker has a Tansu of its own (ready in ms)."""
    configured = os.environ.get(KAFKA_ENV)
    if configured:
        yield configured
        return
    log_dir = tmp_path_factory.mktemp("tansu")
    for attempt in range(3):  # the free port it picked may be taken before Tansu binds it (parallel workers)
        try:
            broker = EmbeddedBroker(log_path=log_dir / f"tansu-{attempt}.log").start()
            break
        except EmbeddedBrokerError:
            if attempt == 2:
                raise
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one isolated worker: its own topics, group id and data dir, fast group timings."""
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        policy=BUNDLED_POLICY,
        data_dir=tmp_path / "data",
        web_bind="127.0.0.1:0",
        app_id=f"warden-test-{suffix}",
        topic_activity=f"t{suffix}.activity",
        topic_findings=f"t{suffix}.findings",
        topic_dlq=f"t{suffix}.dlq",
        topic_control=f"t{suffix}.control",
        topic_revocations=f"t{suffix}.revocations",
        topic_approval_requests=f"t{suffix}.approval.requests",
        topic_approval_decisions=f"t{suffix}.approval.decisions",
        topic_approval_dlq=f"t{suffix}.approval.dlq",
        topic_otlp=f"t{suffix}.otlp",
        topic_otlp_logs=f"t{suffix}.otlp_logs",
        kafka_session_timeout_s=6,
        kafka_heartbeat_interval_s=1,
        kafka_rebalance_timeout_s=3,
        **kafka_security(),  # the secured broker's TLS and SASL (WARDEN_TEST_KAFKA_SECURITY), else nothing
    )


@pytest.fixture
async def worker(worker_settings: Settings) -> AsyncIterator[Runtime]:
    """A running worker on the session broker with the bundled policy."""
    async with Runtime(worker_settings) as rt:
        yield rt


SLACK_TOKEN = "xoxb-test-0000000000-warden"
SLACK_SIGNING_SECRET = "test-signing-secret-not-for-production"


@pytest.fixture
async def slack_api() -> AsyncIterator[SlackApiServer]:
    """A local Slack Web API for one test; it records every request and fails on demand."""
    server = await SlackApiServer(token=SLACK_TOKEN).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """PostgreSQL for the session: WARDEN_TEST_DATABASE_URL when set, else a private server started here (under
    pytest-xdist, one per worker process, each in its own directory on its own port; every test still gets a
    database of its own, so a shared WARDEN_TEST_DATABASE_URL is safe too)."""
    configured = os.environ.get("WARDEN_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps and would delete the live server.
    with tempfile.TemporaryDirectory(prefix="warden-pg-") as base, private_postgres(Path(base)) as url:
        yield url


@pytest.fixture(scope="session")
def schema_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    """The migrated databases every incident_db copies, one per backend, made on first use in this process."""
    templates = Templates(tmp_path_factory.mktemp("schema"))
    yield templates
    if os.environ.get("WARDEN_TEST_DATABASE_URL"):  # a private server goes with its files; a shared one stays up
        asyncio.run(templates.drop())


@pytest.fixture(params=BACKENDS)
async def incident_db(request: pytest.FixtureRequest, tmp_path: Path,
                      schema_templates: Templates) -> AsyncIterator[str]:
    """An incident database at the newest schema, once on SQLite and once on PostgreSQL (the session server,
    started lazily): a copy of the migrated template, so a start's migration finds nothing to do."""
    admin_url = request.getfixturevalue("postgres_admin_url") if request.param == "postgresql" else ""
    template = await schema_templates.migrated(request.param, admin_url)
    async with database_url(request.param, tmp_path, admin_url, template) as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def empty_incident_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An incident database with no schema yet, once per backend: for the tests of migrating one."""
    admin_url = request.getfixturevalue("postgres_admin_url") if request.param == "postgresql" else ""
    async with database_url(request.param, tmp_path, admin_url) as url:
        yield url


@pytest.fixture
def incident_settings(incident_db: str, slack_api: SlackApiServer, tmp_path: Path) -> Settings:
    """Settings for an incident responder on that database and Slack server, with fast loops and retries."""
    return Settings(
        database_url=incident_db,
        data_dir=tmp_path / "data",
        slack_token=SLACK_TOKEN,
        slack_api_url=slack_api.base_url,
        slack_signing_secret=SLACK_SIGNING_SECRET,
        slack_timeout_s=1.0,
        notify_max_attempts=3,
        notify_retry_backoff_s=0.05,
        outbox_poll_s=0.05,
        outbox_lease_s=0.5,
        escalation_poll_s=0.05,
    )
