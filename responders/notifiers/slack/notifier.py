"""The Slack notifier: one root message per incident in the responder's channel, changes in its thread."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from responders.incidents import IncidentView
from responders.notifiers.base import (
    AnyNotice,
    ApprovalNotice,
    DigestNotice,
    GroupNotice,
    Inbound,
    LeaseEnded,
    Notice,
    Outgoing,
    RateLimited,
    TryLater,
    Undeliverable,
    ensure_time,
    time_left,
)
from responders.notifiers.slack import approvals as approval_render
from responders.notifiers.slack import render
from responders.notifiers.slack.interactivity import Interactivity
from responders.notifiers.slack.settings import SlackSettings
from responders.store.notices import NoticeKind, Posted
from warden.contract.findings import OwnerRef
from warden.telemetry import metrics

if TYPE_CHECKING:
    from responders.silences import Silences
    from responders.store.rooms import Store

SDK_RETRIES = 3  # per call, on 429 (after Retry-After), 500/503 and dropped connections; the outbox retries after
# Slack errors that no retry can fix: the notification is dead-lettered at once (with a console alert).
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "user_not_found", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "missing_scope", "no_permission", "msg_too_long", "invalid_blocks",
})
HISTORY_LOOKBACK_S = 300  # how long before the incident opened to look for an interrupted root post
HISTORY_PAGES = 3  # conversations.history pages (200 messages each) searched for an interrupted root post
CALLS_PER_SEND = 2  # the most Web API calls with an effect in one send: chat.update or a post, then a thread reply
FIRST_WAIT_OF_TIMEOUT = 1 / 20  # the first in-call retry waits 1/20 of the call timeout, doubling (0.5 s at 10 s)


def call_bound_s(timeout_s: float) -> float:
    """The longest one Web API call can take with its in-call retries: every try runs into the timeout, and each
    wait between tries is at most one timeout (a longer Retry-After is left to the outbox, see `_BoundedRetry`)."""
    return (SDK_RETRIES + 1) * timeout_s + SDK_RETRIES * timeout_s


# The channel the current request posts to (set by `_call`), so a 429 closes that channel's window only.
_CHANNEL: ContextVar[str] = ContextVar("warden_slack_channel", default="")


class RateWindow:
    """Slack's posting limit is per channel (about one message per second, short bursts tolerated): after a 429
    with Retry-After, no request of this client to that channel (any method, any notification) goes out until the
    window has passed; other channels go on. Requests that name no channel (a look-up by a user id) share ""."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def close_for(self, seconds: float, channel: str | None = None) -> None:
        key = _CHANNEL.get() if channel is None else channel
        self._until[key] = max(self._until.get(key, 0.0), time.monotonic() + seconds)

    def remaining(self, channel: str | None = None) -> float:
        """Seconds left on the channel's window (the current request's channel; with no request, the longest)."""
        now = time.monotonic()
        if channel is None and not _CHANNEL.get():
            return max((until - now for until in self._until.values()), default=0.0) if self._until else 0.0
        return max(0.0, self._until.get(_CHANNEL.get() if channel is None else channel, 0.0) - now)


class _BoundedRetry(AsyncRetryHandler):
    """One of slack-sdk's retry handlers (which failures it retries), with waits bounded by the call timeout and
    only while the outbox's lease leaves time for the retry to finish: Retry-After longer than the timeout is not
    waited out here (the call fails and the outbox retries no sooner, see TryLater); after the wait the lease is
    checked again, since the process may have been paused while it slept."""

    def __init__(self, kind: AsyncRetryHandler, timeout_s: float, window: RateWindow,
                 budget: Callable[[], RateLimited | None] = lambda: None) -> None:
        super().__init__(max_retry_count=kind.max_retry_count)
        self.kind, self.timeout_s, self.window, self.budget = kind, timeout_s, window, budget

    def _longest_wait(self, state: RetryState, response: HttpResponse | None) -> float | None:
        if response is not None and response.status_code == 429:
            self.window.close_for(_retry_after(response.headers))
        if self.window.remaining() > 0:  # this call's 429, or another's to the channel: the channel waits it out
            after = self.window.remaining()
            return after if after <= self.timeout_s else None
        first = FIRST_WAIT_OF_TIMEOUT * self.timeout_s
        return float(min(self.timeout_s, 1.5 * first * 2 ** state.current_attempt))

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        if isinstance(error, LeaseEnded) or not await self.kind._can_retry_async(
                state=state, request=request, response=response, error=error):
            return False
        hook = self.budget()
        if response is not None and response.status_code == 429 and hook is not None:
            # With a shared budget the channel's wait is the budget's: every worker waits it out (its row says so)
            # and the notification goes back to the outbox, instead of sleeping here and then landing on top of the
            # messages the budget let through meanwhile.
            await hook(_CHANNEL.get(), _retry_after(response.headers))
            return False
        wait = self._longest_wait(state, response)
        return wait is not None and time_left() >= wait + self.timeout_s

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        longest = self._longest_wait(state, response) or 0.0
        is_rate_limit = self.window.remaining() > 0
        await asyncio.sleep(longest if is_rate_limit else longest * random.uniform(2 / 3, 1.0))
        ensure_time(self.timeout_s, "a retried Slack request")
        state.next_attempt_requested = True
        state.increment_current_attempt()


def _retry_after(headers: dict[str, Any]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                break
    return 1.0


class SlackNotifier:
    """Talks to the Slack Web API through slack-sdk's AsyncWebClient with its async retry handlers. It can find a
    root it posted (`FindsRoot`), whisper to one person (`tell`, for the interactivity's replies) and say what a
    notice posts where (`Budgeted.spend`, for the per-channel budget). `on_rate_limit(channel, seconds)` hears every
    429, so the budget holds the channel for every worker."""

    name = "slack"

    def __init__(self, token: str, base_url: str | None = None, timeout_s: float = 10.0,
                 on_rate_limit: RateLimited | None = None, *, signing_secret: str | None = None,
                 channel_rate: float = 1.0, channel_burst: int = 3) -> None:
        options: dict[str, Any] = {"base_url": base_url} if base_url else {}
        self.timeout_s = timeout_s
        self.signing_secret = signing_secret  # of the app's button clicks; None: no interactivity
        self.channel_rate, self.channel_burst = channel_rate, channel_burst  # the shared per-channel budget
        # The outbox leases a notification this long right before each send (see Notifier.send_bound_s).
        self.send_bound_s = CALLS_PER_SEND * call_bound_s(timeout_s)
        self.window = RateWindow()
        self.on_rate_limit = on_rate_limit
        self.client = AsyncWebClient(
            token=token,
            timeout=timeout_s,  # type: ignore[arg-type]  # aiohttp accepts fractions of a second
            retry_handlers=[
                _BoundedRetry(kind(max_retry_count=SDK_RETRIES), timeout_s, self.window, lambda: self.on_rate_limit)
                for kind in (AsyncConnectionErrorRetryHandler, AsyncRateLimitErrorRetryHandler,
                             AsyncServerErrorRetryHandler)
            ],
            **options,
        )

    def spend(self, notice: Outgoing) -> dict[str, int]:
        """Messages a notice posts, per channel (chat.update is not a post: Slack limits it per method, not per
        channel). A person's DM is counted under their user id, as it is posted to."""
        if isinstance(notice, ApprovalNotice):  # an ask is one post; closing updates the asks
            return {_channel_or_empty(notice.target): 1} if notice.kind is NoticeKind.approval else {}
        if isinstance(notice, DigestNotice):
            return {_channel_or_empty(notice.target): 1}
        if isinstance(notice, GroupNotice):
            channel = notice.root.address if notice.root is not None else _channel_or_empty(notice.target)
            posts = (0 if notice.root is not None else 1) + (1 if notice.group.lines else 0)
            return {channel: posts} if posts else {}
        if notice.kind is NoticeKind.root:
            return {_channel_or_empty(notice.target): 1}
        root = notice.root.address if notice.root is not None else ""
        if notice.kind is NoticeKind.escalation:
            other = _channel_or_empty(notice.target)
            if other and other != root:
                return {other: 1, root: 1} if root else {other: 1}
        return {root: 1} if root else {}

    async def send(self, notice: AnyNotice) -> Posted:
        if isinstance(notice, DigestNotice):  # a message of its own, no metadata: nothing looks for it again
            return await self._post(_channel(notice.target), render.digest_fallback(notice.digest),
                                    render.digest_blocks(notice.digest))
        if isinstance(notice, GroupNotice):
            return await self._group(notice)
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
                # The next owner's message carries the incident's key, as a root does: an attempt cut off before
                # its thread reply (a lease ended between the two requests) finds it again instead of paging twice.
                found = await self.find_root(inc, notice.target) if notice.retried else None
                posted = found or await self._post(_channel(notice.target), render.fallback(inc),
                                                   render.incident_blocks(inc, preface), metadata=render.metadata(inc))
            await self._reply(root, preface, notice)
            return posted
        await self._call(lambda: self.client.chat_update(
            channel=root.address, ts=root.ref, text=render.fallback(inc), blocks=render.incident_blocks(inc)
        ), channel=root.address)
        note = render.repeat_note(inc) if notice.kind is NoticeKind.repeat else render.safe(notice.note or "")
        return await self._reply(root, note, notice)

    async def send_approval(self, notice: ApprovalNotice) -> Posted:
        """An approval request (`AsksApproval`): the ask, to the owner's DM or channel, with Approve / Deny when they
        may decide; a retried ask first looks for the message an interrupted attempt posted (by the outbox row's key
        in its metadata). Closing replaces each ask by the outcome, without buttons (an update: safe to repeat)."""
        a = notice.approval
        text = approval_render.fallback(a.id, a.agent_id, a.action)
        if notice.kind is NoticeKind.approval_closed:
            for posted, asked in notice.messages:
                blocks = approval_render.request_blocks(
                    request_id=a.id, agent_id=a.agent_id, workflow=a.workflow, action=a.action, reason=a.reason,
                    approver=asked, status=a.status, decided_by=a.decided_by)
                await self.update(posted, text, blocks)
            return notice.messages[0][0] if notice.messages else Posted(address="", ref="")
        channel = _channel(notice.target)
        if notice.retried and notice.key is not None:
            found = await self._find(notice.target, a.requested_at.timestamp(),
                                     lambda m: approval_render.is_ask_of(m, a.id, notice.key or ""))
            if found is not None:
                return found
        blocks = approval_render.request_blocks(
            request_id=a.id, agent_id=a.agent_id, workflow=a.workflow, action=a.action, reason=a.reason,
            approver=notice.target, preface=notice.note, buttons=notice.buttons)
        return await self._post(channel, text, blocks, metadata=None if notice.key is None
                                else approval_render.ask_metadata(a.id, notice.key))

    async def _reply(self, root: Posted, text: str, notice: Notice) -> Posted:
        """Post in the root's thread, carrying the notification's key; a retried notification first looks for the
        reply an interrupted attempt may have posted (its response lost to a timeout, a pause or a dropped
        connection), so the thread says it once."""
        if notice.key is None:
            return await self._post(root.address, text, thread=root)
        if notice.retried:
            found = await self.find_reply(root, notice.incident, notice.key)
            if found is not None:
                return found
        return await self._post(root.address, text, thread=root,
                                metadata=render.reply_metadata(notice.incident, notice.key))

    async def find_reply(self, root: Posted, incident: IncidentView, key: str) -> Posted | None:
        """Look for the reply carrying `key` in the root's thread (reads only)."""
        return await self._scan(self.client.conversations_replies, {"channel": root.address, "ts": root.ref},
                                lambda m: render.is_reply_of(m, incident, key))

    async def _group(self, notice: GroupNotice) -> Posted:
        """A group's digest: its message updated in place (or posted: the group's first refresh, or the first after
        the repeat interval), then the members this refresh names, in its thread. A retried post first looks for the
        message an earlier attempt may have posted (by the group id and epoch in its metadata)."""
        group = notice.group
        text, blocks = render.group_fallback(group), render.group_blocks(group)
        posted = notice.root
        if posted is None and notice.retried:
            posted = await self._find(notice.target, group.opened_at.timestamp(),
                                      lambda m: render.is_digest_of(m, group))
        if posted is None:
            posted = await self._post(_channel(notice.target), text, blocks, metadata=render.group_metadata(group))
        else:
            await self._call(lambda: self.client.chat_update(channel=posted.address, ts=posted.ref, text=text,
                                                             blocks=blocks), channel=posted.address)
        if group.lines:
            await self._post(posted.address, render.group_lines(group), thread=posted)
        return posted

    async def find_root(self, incident: IncidentView, target: OwnerRef) -> Posted | None:
        """Look for the incident's root among the app's messages since shortly before the incident opened, by the
        key in its metadata (reads only: no lease check needed, the post that may follow checks its own)."""
        return await self._find(target, incident.opened_at.timestamp(), lambda m: render.is_root_of(m, incident))

    async def _find(self, target: OwnerRef, since: float, wanted: Callable[[dict[str, Any]], bool]) -> Posted | None:
        """The app's message in the target's channel (or DM) since shortly before `since` that `wanted` accepts."""
        channel = _channel(target)
        if channel[0] in "UW":  # a person: their messages live in the app's DM with them
            opened = await self._call(lambda: self.client.conversations_open(users=channel), effect=False)
            channel = opened["channel"]["id"]
        return await self._scan(self.client.conversations_history,
                                {"channel": channel, "oldest": str(since - HISTORY_LOOKBACK_S)}, wanted)

    async def _scan(self, method: Callable[..., Awaitable[AsyncSlackResponse]], query: dict[str, Any],
                    wanted: Callable[[dict[str, Any]], bool]) -> Posted | None:
        """The first message `wanted` accepts in up to HISTORY_PAGES pages of 200 that `method` (a channel's history
        or a thread) answers for `query`, with their metadata (reads only)."""
        channel = query["channel"]
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            args: dict[str, Any] = {**query, "include_all_metadata": True, "limit": 200}
            if cursor:
                args["cursor"] = cursor
            page = await self._call(partial(method, **args), effect=False, channel=channel)
            messages: list[dict[str, Any]] = page.get("messages", [])
            for message in messages:
                if wanted(message):
                    return Posted(address=channel, ref=message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                break
        return None

    def inbound(self, store: Store, silences: Silences, *, clock: Callable[[], datetime],
                on_change: Callable[[], None]) -> Inbound | str:
        """The interactivity route (`Interactive`): button clicks, verified with the app's signing secret."""
        if self.signing_secret is None:
            return "WARDEN_SLACK_SIGNING_SECRET unset"
        return Interactivity(store, self, self.signing_secret, clock=clock, on_change=on_change, silences=silences)

    async def tell(self, channel: str, slack_user: str, text: str) -> None:
        """Say something only `slack_user` sees (a refusal, a stale click)."""
        await self._call(lambda: self.client.chat_postEphemeral(channel=channel, user=slack_user,
                                                                text=render.safe(text)), channel=channel)

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]]) -> Posted:
        """Post a message of another kind than an incident's (an approval request) to a user or channel."""
        return await self._post(channel, text, blocks)

    async def update(self, posted: Posted, text: str, blocks: list[dict[str, Any]]) -> None:
        """Replace a message posted by `post` (its buttons go once it is decided)."""
        await self._call(lambda: self.client.chat_update(channel=posted.address, ts=posted.ref, text=text,
                                                         blocks=blocks), channel=posted.address)

    async def _post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                    thread: Posted | None = None, metadata: dict[str, Any] | None = None) -> Posted:
        args: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False, "unfurl_media": False}
        if blocks:
            args["blocks"] = blocks
        if thread:
            args["thread_ts"] = thread.ref
        if metadata:
            args["metadata"] = metadata
        response = await self._call(lambda: self.client.chat_postMessage(**args), channel=channel)
        metrics.CHANNEL_MESSAGES.labels(notifier=self.name, channel=channel).inc()
        return Posted(address=response["channel"], ref=response["ts"])

    async def _call(self, request: Callable[[], Awaitable[AsyncSlackResponse]], *, effect: bool = True,
                    channel: str = "") -> AsyncSlackResponse:
        """Make one Web API call to `channel`. One with an effect is made only if it can finish within the outbox's
        lease (else LeaseEnded). An error no retry can fix becomes Undeliverable, a rate limit longer than the call
        timeout TryLater (naming the channel); the rest propagate. While an earlier 429's Retry-After lasts for the
        channel, the call waits it out first (or, when that is longer than a call timeout or the lease, is TryLater
        without a request)."""
        token = _CHANNEL.set(channel)
        try:
            return await self._call_in_channel(request, effect, channel)
        finally:
            _CHANNEL.reset(token)

    async def _call_in_channel(self, request: Callable[[], Awaitable[AsyncSlackResponse]], effect: bool,
                               channel: str) -> AsyncSlackResponse:
        wait = self.window.remaining(channel)
        if wait > 0:
            if wait > self.timeout_s or time_left() < wait + self.timeout_s:
                raise TryLater(f"slack: {channel or 'the API'} rate limited for another {wait:.1f}s", wait,
                               channel or None)
            await asyncio.sleep(wait)
        if effect:
            ensure_time(self.timeout_s, "a Slack request")
        try:
            return await request()
        except SlackApiError as exc:
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            method = exc.response.api_url.rsplit("/", 1)[-1]
            if exc.response.status_code == 200 and error in PERMANENT_ERRORS:
                raise Undeliverable(f"slack {method}: {error}") from None
            if exc.response.status_code == 429:
                after = _retry_after(dict(exc.response.headers or {}))
                self.window.close_for(after, channel)
                raise TryLater(f"slack {method}: {channel or 'the API'} rate limited for {after:g}s", after,
                               channel or None) from None
            raise


def _channel(target: OwnerRef) -> str:
    channel = target.contact(render.NOTIFIER)
    if not channel:
        raise Undeliverable(f"owner {target.id!r} has no Slack id in the matrix")
    return channel


def _channel_or_empty(target: OwnerRef) -> str:
    return target.contact(render.NOTIFIER) or ""


def from_settings(settings: SlackSettings) -> SlackNotifier:
    if settings.slack_token is None:
        raise ValueError("the Slack notifier needs WARDEN_SLACK_TOKEN")
    secret = settings.slack_signing_secret
    return SlackNotifier(settings.slack_token.get_secret_value(), settings.slack_api_url, settings.slack_timeout_s,
                         signing_secret=None if secret is None else secret.get_secret_value(),
                         channel_rate=settings.slack_channel_rate, channel_burst=settings.slack_channel_burst)
