"""The approval requests' Approve/Deny buttons on Slack: each click decided through the approval desk as the
clicker, and a refusal told to them alone."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from responders.notifiers.base import DONE, DecidesApprovals
from responders.notifiers.slack.approvals import ApprovalAction, approval_clicks
from responders.notifiers.slack.render import NOTIFIER, is_user_id
from warden.contract.actors import Actor

log = logging.getLogger("warden.approvals")


class Tells(Protocol):
    """Says something only the clicker sees: `SlackNotifier.tell` (a Protocol, so the clicks' modules do not
    import the notifier that builds them)."""

    async def tell(self, channel: str, slack_user: str, text: str) -> None: ...


class ApprovalClicks:
    """Reads the approval buttons of a verified interactivity payload (the incident buttons are the
    interactivity's own)."""

    def __init__(self, desk: DecidesApprovals, slack: Tells) -> None:
        self.desk, self.slack = desk, slack

    async def handle(self, payload: dict[str, Any]) -> None:
        for action, request_id, user, channel in approval_clicks(payload):
            await self.click(action, request_id, user, channel)

    async def click(self, action: ApprovalAction, request_id: str, user: str, channel: str) -> str:
        """Only a Slack user can decide (a channel id never clicks); what the desk said, told to the clicker
        unless it was done."""
        decided = await self.desk.decide_by(request_id, Actor(NOTIFIER, user, channel),
                                            approve=action is ApprovalAction.approve, person=is_user_id(user))
        if decided is None:
            return await self._tell(channel, user, f"Approval request {request_id} is unknown.")
        outcome, text = decided
        return text if outcome == DONE else await self._tell(channel, user, text)

    async def _tell(self, channel: str, user: str, text: str) -> str:
        try:
            await self.slack.tell(channel, user, text)
        except Exception:  # noqa: BLE001 - the refusal is recorded; telling the clicker is best effort
            log.warning("could not tell %s about an approval click", user)
        return text
