"""Through a real worker: an out-of-scope call on the activity topic reaches the named responder on Slack."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import SecretStr

from responders.notifiers.slack.interactivity import PATH
from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import Settings
from service.runtime.worker import Runtime
from tests.conftest import SLACK_SIGNING_SECRET, SLACK_TOKEN
from tests.support.incident_helpers import eventually
from tests.support.kafka_helpers import event, produce_events

pytestmark = pytest.mark.integration


async def test_an_out_of_scope_call_reaches_the_named_responder_on_slack(
    worker_settings: Settings, slack_api: SlackApiServer
) -> None:
    settings = worker_settings.model_copy(update={
        "slack_token": SecretStr(SLACK_TOKEN), "slack_api_url": slack_api.base_url,
        "slack_signing_secret": SecretStr(SLACK_SIGNING_SECRET), "outbox_poll_s": 0.1,
    })
    async with Runtime(settings) as rt:
        call = event("billing-agent-1", tool={"name": "shell.exec", "arguments": {"cmd": "curl <!channel>"}})
        await produce_events(rt.bootstrap, settings.topic_activity, [call])
        [root] = await eventually(slack_api.roots, timeout=60, what="the root message on Slack")
        assert rt.web is not None
        url = f"http://127.0.0.1:{rt.web.port}{PATH}"
        async with aiohttp.ClientSession() as session, session.post(url, data=b"payload={}") as response:
            assert response.status == 401  # the worker serves the interactivity route, and checks signatures
    assert root.channel == "C0FINOPS"  # billing-agent's named responder in the bundled matrix
    assert "billing-agent-1" in root.text and "&lt;!channel&gt;" in str(root.blocks)
