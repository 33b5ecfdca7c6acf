"""Slack's Retry-After holds for the whole client: after a 429 no notification's request lands inside the window."""

from __future__ import annotations

import asyncio
import time

import pytest

from responders.notifiers.base import Notice, TryLater, send_deadline
from responders.notifiers.slack.notifier import SlackNotifier
from responders.store.notices import NoticeKind
from service.demo.slack_api_server import SlackApiServer
from tests.conftest import SLACK_TOKEN
from tests.unit.responders.test_incidents import view

SLACK_CLOCK_SLACK_S = 0.05  # the server stamps arrival with time.time(), the client waits on time.monotonic()


def _notice(incident_id: int) -> Notice:
    inc = view(id=incident_id)
    return Notice(NoticeKind.root, inc, inc.owners.responder)


async def test_after_a_429_the_next_notifications_request_waits_out_retry_after(slack_api: SlackApiServer) -> None:
    slack = SlackNotifier(SLACK_TOKEN, slack_api.base_url, timeout_s=2.0)
    slack_api.fail("chat.postMessage", status=429, retry_after=1, times=1)
    with send_deadline(time.monotonic() + 30):
        first = asyncio.create_task(slack.send(_notice(1)))
        # the first request got its 429 and the client has read it (its window is open, or already over and the
        # retry sent): the window opens then, not when the server answered; under load a second send issued in
        # between went out at once and failed the test
        waited_until = time.monotonic() + 10
        while not (slack_api.requests and (slack.window.remaining() > 0 or len(slack_api.requests) > 1)):
            assert time.monotonic() < waited_until, "the client never saw the 429"
            await asyncio.sleep(0.01)
        await slack.send(_notice(2))  # another notification, while the first one's window lasts
        await first
    limited, *after = slack_api.calls("chat.postMessage")
    assert len(after) == 2 and len(slack_api.roots()) == 2
    for request in after:
        assert request.at >= limited.at + 1 - SLACK_CLOCK_SLACK_S, "a request landed inside the Retry-After window"


async def test_a_window_longer_than_a_call_is_the_outboxs_to_wait_for_every_notification(
    slack_api: SlackApiServer,
) -> None:
    slack = SlackNotifier(SLACK_TOKEN, slack_api.base_url, timeout_s=1.0)
    slack_api.fail("chat.postMessage", status=429, retry_after=30, times=1)
    with pytest.raises(TryLater) as first:
        await slack.send(_notice(1))
    with pytest.raises(TryLater) as second:
        await slack.send(_notice(2))
    assert first.value.after_s == 30 and 28 < second.value.after_s <= 30
    assert len(slack_api.requests) == 1, "the second notification made no request inside the window"
    with pytest.raises(TryLater):
        await slack.find_root(view(id=3), view(id=3).owners.responder)  # reads wait too
    assert len(slack_api.requests) == 1
