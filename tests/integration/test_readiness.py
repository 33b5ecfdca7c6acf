"""/readyz means ready (issue 30): a running worker whose database, then broker, is stopped under it stops being
ready within seconds and says which check failed, while /healthz, the liveness check, still answers ok.
The worker gets a broker and a PostgreSQL server of its own, since this test stops both."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from service.runtime.broker import EmbeddedBroker
from service.runtime.settings import Settings
from service.runtime.worker import Runtime
from tests.support.incident_helpers import eventually
from tests.support.pg_server import private_postgres, sqlalchemy_url


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def _status(port: int, path: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(_get, port, path)


async def test_readyz_follows_the_database_and_the_broker_while_healthz_stays_ok(tmp_path: Path) -> None:
    with ExitStack() as outer, ExitStack() as stack:
        broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
        outer.callback(broker.stop)
        admin = stack.enter_context(private_postgres(tmp_path))
        database = sqlalchemy_url(admin, "postgres")
        settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=database, data_dir=tmp_path / "data",
                            web_bind="127.0.0.1:0", kafka_session_timeout_s=6, kafka_heartbeat_interval_s=1,
                            kafka_rebalance_timeout_s=3)
        async with Runtime(settings) as rt:
            assert rt.web is not None
            port = rt.web.port

            async def ready() -> dict[str, Any] | None:
                code, body = await _status(port, "/readyz")
                return body if code == 200 and body["ready"] else None

            body = await eventually(ready, 30, "/readyz to answer 200 on a working worker")
            assert set(body["checks"]) == {"broker", "group", "database", "policy"}
            assert body["checks"]["database"]["detail"] == "postgresql answered"
            assert body["checks"]["policy"]["detail"].startswith("sha256 ")

            stack.close()  # PostgreSQL stops under the running worker (its files go with it)
            broker.stop()  # and so does the broker

            async def not_ready() -> dict[str, Any] | None:
                code, body = await _status(port, "/readyz")
                failing = {name for name, check in body["checks"].items() if not check["ok"]}
                return body if code == 503 and {"database", "broker"} <= failing else None

            body = await eventually(not_ready, 30, "/readyz to answer 503 naming the database and the broker")
            assert body["ready"] is False and body["checks"]["policy"]["ok"] is True
            assert "postgres@" not in json.dumps(body)  # says which check failed, never a URL
            code, health = await _status(port, "/healthz")
            assert code == 200 and health == {"ok": True}
            broker.start()  # an empty broker again on the same port, so that the worker can leave its group and stop


@pytest.mark.integration
async def test_readyz_answers_ok_on_the_session_broker(worker: Runtime) -> None:
    """The same endpoint on the suite's broker (Apache Kafka, and SASL_SSL, in .ci/run's later runs)."""
    assert worker.web is not None

    async def ready() -> dict[str, Any] | None:
        # the ignore below: the started worker's web server; a closure does not see the narrowing
        code, body = await _status(worker.web.port, "/readyz")  # type: ignore[union-attr]
        return body if code == 200 else None

    body = await eventually(ready, 30, "/readyz 200")
    assert body["checks"]["group"]["detail"].startswith(f"joined {worker.settings.app_id}.ingest")
