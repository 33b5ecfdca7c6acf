"""A thread reply is said once per notification: an attempt whose reply reached Slack but whose answer was lost (a
timeout, a paused worker, a dropped connection) is retried by the outbox, and the retry finds that reply by the
notification's key instead of posting it again (seen with two workers under load: two replies for one repeat)."""

from __future__ import annotations

from dataclasses import replace

from responders.notifiers.base import Notice
from responders.notifiers.slack.notifier import SlackNotifier
from responders.store.notices import NoticeKind
from service.demo.slack_api_server import SlackApiServer
from tests.conftest import SLACK_TOKEN
from tests.unit.responders.test_incidents import view


async def test_a_retried_repeat_finds_its_reply_in_the_thread_instead_of_posting_it_again(
        slack_api: SlackApiServer) -> None:
    slack = SlackNotifier(SLACK_TOKEN, slack_api.base_url, timeout_s=2.0)
    inc = view()
    root = await slack.send(Notice(NoticeKind.root, inc, inc.owners.responder))
    repeat = Notice(NoticeKind.repeat, inc, inc.owners.responder, root=root, key="41")
    first = await slack.send(repeat)  # the reply went out; the outbox retries as if it had not heard
    again = await slack.send(replace(repeat, retried=True))
    [reply] = slack_api.replies(slack_api.roots(root.address)[0])
    assert again == first and first.ref == reply.ts
    assert len(slack_api.calls("conversations.replies")) == 1, "only the retry looks"


async def test_a_retried_repeat_whose_reply_never_went_out_posts_it_once(slack_api: SlackApiServer) -> None:
    slack = SlackNotifier(SLACK_TOKEN, slack_api.base_url, timeout_s=2.0)
    inc = view()
    root = await slack.send(Notice(NoticeKind.root, inc, inc.owners.responder))
    other = await slack.send(Notice(NoticeKind.repeat, inc, inc.owners.responder, root=root, key="40"))
    retried = await slack.send(Notice(NoticeKind.repeat, inc, inc.owners.responder, root=root, key="41",
                                      retried=True))
    replies = slack_api.replies(slack_api.roots(root.address)[0])
    assert [m.ts for m in replies] == [other.ref, retried.ref], "another notification's reply is not this one's"
    assert [m.metadata["event_payload"]["notification"] for m in replies if m.metadata] == ["40", "41"]


async def test_a_reply_found_in_a_long_thread_is_read_page_by_page(slack_api: SlackApiServer) -> None:
    slack = SlackNotifier(SLACK_TOKEN, slack_api.base_url, timeout_s=2.0)
    inc = view()
    root = await slack.send(Notice(NoticeKind.root, inc, inc.owners.responder))
    for i in range(2, 260):  # more replies than one page (200) of conversations.replies, before the one wanted
        await slack.send(Notice(NoticeKind.update, inc, inc.owners.responder, note=f"n{i}", root=root, key=str(i)))
    wanted = await slack.send(Notice(NoticeKind.repeat, inc, inc.owners.responder, root=root, key="1"))
    found = await slack.find_reply(root, inc, "1")
    assert found == wanted
    assert await slack.find_reply(root, inc, "999") is None
    assert len(slack_api.calls("conversations.replies")) == 4, "two pages per look: the thread has 260 messages"
