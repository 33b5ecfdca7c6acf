"""The Slack notifier: one root message per incident in the responder's channel, changes in its thread."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from responders.config import ResponderConfig
from responders.incidents import IncidentView
from responders.notifiers.base import Notice, NoticeKind, Posted, Undeliverable
from responders.notifiers.slack import render
from warden.contract.findings import OwnerRef

SDK_RETRIES = 3  # per call, on 429 (after Retry-After), 500/503 and dropped connections; the outbox retries after
# Slack errors that no retry can fix: the notification is dead-lettered at once (with a console alert).
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "user_not_found", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "missing_scope", "no_permission", "msg_too_long", "invalid_blocks",
})
HISTORY_LOOKBACK_S = 300  # how long before the incident opened to look for an interrupted root post


class SlackNotifier:
    """Talks to the Slack Web API through slack-sdk's AsyncWebClient with its async retry handlers. It can find a
    root it posted (`FindsRoot`) and whisper to one person (`tell`, for the interactivity's replies)."""

    name = "slack"

    def __init__(self, token: str, base_url: str | None = None, timeout_s: float = 10.0) -> None:
        options: dict[str, Any] = {"base_url": base_url} if base_url else {}
        self.client = AsyncWebClient(
            token=token,
            timeout=timeout_s,  # type: ignore[arg-type]  # aiohttp accepts fractions of a second
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=SDK_RETRIES),
                AsyncRateLimitErrorRetryHandler(max_retry_count=SDK_RETRIES),
                AsyncServerErrorRetryHandler(max_retry_count=SDK_RETRIES),
            ],
            **options,
        )

    async def send(self, notice: Notice) -> Posted:
        inc = notice.incident
        if notice.kind is NoticeKind.root:
            return await self._post(_channel(notice.target), render.fallback(inc), render.incident_blocks(inc),
                                    metadata=render.metadata(inc))
        root = notice.root
        if root is None:
            raise Undeliverable("the incident has no root message to update")
        if notice.kind is NoticeKind.escalation:
            posted = root
            preface = render.escalation_preface(notice.target, notice.note)
            if notice.target.contact(render.NOTIFIER) != root.address:
                posted = await self._post(_channel(notice.target), render.fallback(inc),
                                          render.incident_blocks(inc, preface))
            await self._post(root.address, preface, thread=root)
            return posted
        await self._call(self.client.chat_update(
            channel=root.address, ts=root.ref, text=render.fallback(inc), blocks=render.incident_blocks(inc)
        ))
        note = render.repeat_note(inc) if notice.kind is NoticeKind.repeat else render.safe(notice.note or "")
        return await self._post(root.address, note, thread=root)

    async def find_root(self, incident: IncidentView, target: OwnerRef) -> Posted | None:
        channel = _channel(target)
        if channel[0] in "UW":  # a person: their messages live in the app's DM with them
            opened = await self._call(self.client.conversations_open(users=channel))
            channel = opened["channel"]["id"]
        history = await self._call(self.client.conversations_history(
            channel=channel, include_all_metadata=True, limit=200,
            oldest=str(incident.opened_at.timestamp() - HISTORY_LOOKBACK_S),
        ))
        messages: list[dict[str, Any]] = history.get("messages", [])
        for message in messages:
            if render.is_root_of(message, incident):
                return Posted(address=channel, ref=message["ts"])
        return None

    async def tell(self, channel: str, slack_user: str, text: str) -> None:
        """Say something only `slack_user` sees (a refusal, a stale click)."""
        await self._call(self.client.chat_postEphemeral(channel=channel, user=slack_user, text=render.safe(text)))

    async def _post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                    thread: Posted | None = None, metadata: dict[str, Any] | None = None) -> Posted:
        args: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False, "unfurl_media": False}
        if blocks:
            args["blocks"] = blocks
        if thread:
            args["thread_ts"] = thread.ref
        if metadata:
            args["metadata"] = metadata
        response = await self._call(self.client.chat_postMessage(**args))
        return Posted(address=response["channel"], ref=response["ts"])

    @staticmethod
    async def _call(request: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
        """Await one Web API call; an error no retry can fix becomes Undeliverable, the rest propagate."""
        try:
            return await request
        except SlackApiError as exc:
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            if exc.response.status_code == 200 and error in PERMANENT_ERRORS:
                method = exc.response.api_url.rsplit("/", 1)[-1]
                raise Undeliverable(f"slack {method}: {error}") from None
            raise


def _channel(target: OwnerRef) -> str:
    channel = target.contact(render.NOTIFIER)
    if not channel:
        raise Undeliverable(f"owner {target.id!r} has no Slack id in the matrix")
    return channel


def from_config(settings: ResponderConfig) -> SlackNotifier:
    if settings.slack_token is None:
        raise ValueError("the Slack notifier needs WARDEN_SLACK_TOKEN")
    return SlackNotifier(settings.slack_token.get_secret_value(), settings.slack_api_url, settings.slack_timeout_s)
