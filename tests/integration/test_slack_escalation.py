"""An escalation pages the next owner once, and says so once in the incident's thread, even when an earlier attempt
was cut off after either message (a lease that ended between the two requests; seen with two workers under load)."""

from __future__ import annotations

from dataclasses import replace

from responders.notifiers.base import Notice
from responders.notifiers.slack.notifier import SlackNotifier
from responders.store.notices import NoticeKind
from service.demo.slack_api_server import SlackApiServer
from tests.conftest import SLACK_TOKEN
from tests.unit.responders.test_incidents import view


async def test_a_retried_escalation_finds_the_next_owners_message_instead_of_paging_again(
        slack_api: SlackApiServer) -> None:
    slack = SlackNotifier(SLACK_TOKEN, slack_api.base_url, timeout_s=2.0)
    inc = view()  # billing-agent-1: finance-ops responds, the chain ends with the CISO (a person: a DM)
    root = await slack.send(Notice(NoticeKind.root, inc, inc.owners.responder))
    ciso = inc.owners.escalation[-1].owner
    escalation = Notice(NoticeKind.escalation, inc, ciso, note="last on the escalation chain", root=root, key="7")
    first = await slack.send(escalation)  # both requests made; the outbox then retries as if it had not heard
    again = await slack.send(replace(escalation, retried=True))
    [to_ciso] = slack_api.roots("D0CISO")
    assert again == first and (first.address, first.ref) == ("D0CISO", to_ciso.ts)
    assert to_ciso.metadata is not None and to_ciso.metadata["event_payload"]["incident_id"] == inc.id
    [reply] = slack_api.replies(slack_api.roots(root.address)[0])  # found by the notification's key, not repeated
    assert reply.metadata is not None and reply.metadata["event_payload"]["notification"] == escalation.key
