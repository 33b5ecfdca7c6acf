"""The example matrix with approval chains that climb (access-provisioner: iam-team, then the CISO, marked
`approves`; billing-agent: finance-ops marked `approves`, then secops), a gated tool category (payment) and a
custom `gate: approval` rule; the desk as the approval tests drive it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from responders.approvals.desk import ApprovalDesk
from responders.db.models import Notification
from responders.incident_responder import IncidentResponder
from responders.notifiers.slack.approval_clicks import ApprovalClicks
from responders.notifiers.slack.notifier import SlackNotifier
from responders.trail import Trail
from service.demo.slack_api_server import SlackApiServer
from service.runtime.catalogue import CATALOGUE
from streams.verdict import judge
from tests.conftest import SLACK_TOKEN
from tests.support.incident_helpers import POLICY as BASE_POLICY
from tests.support.incident_helpers import FakeClock, eventually
from warden.contract.approval_requests import ApprovalAnswer, ApprovalRequest
from warden.contract.events import ActivityEvent
from warden.contract.matrix import Matrix
from warden.policy import Policy, build_policy

GRANT = {"agent": {"id": "iam-agent-1"}, "correlation_id": "corr-1", "session_id": "s-1",
         "identity_change": {"operation": "grant_role", "target": "user:kim", "entitlement": "finance-readonly"}}


def approval_policy(timeout: timedelta = timedelta(minutes=5)) -> Policy:
    m: dict[str, Any] = BASE_POLICY.matrix.model_dump(mode="python", exclude_unset=True)
    wf = m["workflows"]["access-provisioner"]
    wf["escalation"] = [{"owner": "iam-team", "ack_timeout": timedelta(minutes=5), "approves": True},
                        {"owner": "ciso", "ack_timeout": timedelta(minutes=10), "approves": True}]
    wf["scope"]["approvals"] = {"timeout": timeout}
    billing = m["workflows"]["billing-agent"]
    billing["escalation"] = [{"owner": "finance-ops", "ack_timeout": timedelta(minutes=10), "approves": True},
                             {"owner": "secops", "ack_timeout": timedelta(minutes=20)}]
    billing["scope"]["approvals"] = {"categories": ["payment"], "timeout": timeout}
    m["rules"]["custom"] = [*m["rules"].get("custom", []), {
        "id": "refund-needs-approval", "gate": "approval", "severity": "medium",
        "condition": 'event.kind == "tool_call" && event.tool.name == "billing.lookup_invoice"'}]
    return build_policy(Matrix.model_validate(m), CATALOGUE, sha256="a" * 64)


POLICY = approval_policy()


def req(body: dict[str, Any], **changes: Any) -> ApprovalRequest:
    return ApprovalRequest.model_validate({**body, **changes})


class Desk:
    """A desk on a real database and the Slack API server, with a clock the test moves and a publish log. Its asks
    go out through the responder's outbox (running), as in a worker."""

    def __init__(self, responder: IncidentResponder, slack_api: SlackApiServer, clock: FakeClock) -> None:
        self.published: list[tuple[ApprovalAnswer, ActivityEvent | None]] = []

        async def publish(answer: ApprovalAnswer, event: ActivityEvent | None) -> None:
            self.published.append((answer, event))

        self.desk = ApprovalDesk(responder.engine, judge=lambda r, rid, now: judge(r, rid, POLICY, now),
                                 clock=clock, notifiers=["slack"],
                                 wake=responder.outbox.wake, publish=publish, live_policy=lambda: POLICY.sha256)
        self.clicks = ApprovalClicks(self.desk, SlackNotifier(SLACK_TOKEN, slack_api.base_url, 1.0))
        self.trail = Trail(responder.engine)
        self.responder = responder

    async def settle(self) -> None:
        """The desk's passes until it has nothing to do, then the outbox's until the asks and closes it recorded
        are out."""
        while await self.desk.step():
            pass
        await eventually(self._delivered, what="the approval requests' notifications")

    async def _delivered(self) -> bool:
        async with self.responder.store.sessions() as s:
            return not (await s.execute(select(Notification.id).where(
                Notification.approval_id.is_not(None), Notification.status == "pending"))).first()

    async def kinds(self, rid: str) -> list[str]:
        return [e.kind for e in await self.desk.store.timeline(rid)]


