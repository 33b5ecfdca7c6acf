"""Shared fixtures: a real Kafka-protocol broker (Tansu, or WARDEN_TEST_KAFKA_BOOTSTRAP) and worker settings."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from warden.runtime import Runtime
from warden.settings import BUNDLED_POLICY, Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker for the session: Apache Kafka when WARDEN_TEST_KAFKA_BOOTSTRAP is set, else Tansu."""
    configured = os.environ.get("WARDEN_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log").start()
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
        kafka_session_timeout_s=6,
        kafka_heartbeat_interval_s=1,
        kafka_rebalance_timeout_s=3,
    )


@pytest.fixture
async def worker(worker_settings: Settings) -> AsyncIterator[Runtime]:
    """A running worker on the session broker with the bundled policy."""
    async with Runtime(worker_settings) as rt:
        yield rt
