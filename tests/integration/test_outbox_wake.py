"""On PostgreSQL, notifications committed by another writer wake this worker's outbox at once, not at its poll."""

from __future__ import annotations

from pathlib import Path

from responders.db import make_engine
from responders.incident_responder import IncidentResponder
from responders.store.common import utcnow
from responders.store.rooms import Store
from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import Settings
from tests.conftest import SLACK_TOKEN
from tests.support.incident_db import database_url
from tests.support.incident_helpers import eventually, finding

POLL_S = 600.0  # far longer than the test may wait: only the wake-up can send the message in time


async def test_an_incident_another_worker_records_is_sent_by_this_one_without_waiting_for_its_poll(
        postgres_admin_url: str, tmp_path: Path, slack_api: SlackApiServer) -> None:
    async with database_url("postgresql", tmp_path, postgres_admin_url) as url:
        settings = Settings(database_url=url, data_dir=tmp_path / "data", slack_token=SLACK_TOKEN,
                            slack_api_url=slack_api.base_url, outbox_poll_s=POLL_S, escalation_poll_s=POLL_S)
        worker = IncidentResponder(settings)
        await worker.start()
        other = make_engine(url)  # another worker's store: it records, and its outbox never runs
        try:
            await eventually(worker.listen.listening.is_set, what="the outbox listening")
            await Store.build(other, ["slack"]).incidents.record_finding(finding("support-bot-1", "shell.exec"),
                                                                         utcnow())
            roots = await eventually(slack_api.roots, timeout=30, what="the root message, sent by the listening worker")
            assert len(roots) == 1
        finally:
            await worker.stop()
            await other.dispose()


async def test_the_outbox_does_not_listen_on_sqlite(tmp_path: Path) -> None:
    """SQLite has one worker, woken in process: no listening connection is held."""
    worker = IncidentResponder(Settings(data_dir=tmp_path / "data"))
    await worker.start()
    try:
        assert worker.listen._task is None and not worker.listen.listening.is_set()
    finally:
        await worker.stop()
