"""Fixtures shared by the integration tests of one stage (the shared services are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from responders.incident_responder import IncidentResponder
from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import Settings
from tests.support.approval_helpers import Desk
from tests.support.incident_helpers import FakeClock


@pytest.fixture
async def desk(incident_settings: Settings, slack_api: SlackApiServer) -> AsyncIterator[tuple[Desk, FakeClock]]:
    """The approval desk on a started incident responder (its outbox delivers the asks), on a fake clock."""
    clock = FakeClock()
    responder = IncidentResponder(incident_settings, clock=clock)
    await responder.start()
    try:
        yield Desk(responder, slack_api, clock), clock
    finally:
        await responder.stop()
