"""The webhook notifier: each notice one signed POST (Standard Webhooks) to one URL; send-only, no buttons."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import aiohttp
from standardwebhooks import Webhook
from yarl import URL

from responders.notifiers.base import AnyNotice, TryLater, Undeliverable, ensure_time
from responders.notifiers.webhook import render
from responders.notifiers.webhook.settings import WebhookSettings, read_secret
from responders.store.notices import Posted

log = logging.getLogger("warden.webhook")
RETRY_AFTER_DEFAULT_S = 30.0  # a 429 without a usable Retry-After: the outbox tries again no sooner than this


class WebhookFailed(Exception):
    """The receiver failed in a way a later attempt may not (5xx, a dropped connection, a timeout): retried."""


def _public(url: str) -> str:
    """The URL as logs and dead-letter reasons show it: no query (it may carry a token)."""
    u = URL(url)
    return str(u.with_query(None).with_fragment(None))


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else RETRY_AFTER_DEFAULT_S
    except ValueError:
        return RETRY_AFTER_DEFAULT_S


class WebhookNotifier:
    """POSTs each notice as JSON with `webhook-id`, `webhook-timestamp` and `webhook-signature`: the id is the same
    on every attempt of a notification (`render.message_id`), so a receiver that keeps the ids it saw never acts
    twice. One request per send, never retried inside it: retries, 429's Retry-After and dead letters are the
    outbox's. 4xx other than 408 and 429 cannot get better and dead-letter at once."""

    name = render.NOTIFIER

    def __init__(self, url: str, secret: str, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.signer = Webhook(secret)
        self.send_bound_s = timeout_s + 1.0  # one request and its timeout; the outbox leases this long

    async def send(self, notice: AnyNotice) -> Posted:
        msg_id = render.message_id(notice)
        body = json.dumps(render.body(notice), separators=(",", ":"), sort_keys=True)
        now = datetime.now(UTC)
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self.signer.sign(msg_id, now, body), "content-type": "application/json",
                   "user-agent": "warden-notifier"}
        where = _public(self.url)
        ensure_time(self.timeout_s, "a webhook request")
        try:
            async with aiohttp.ClientSession() as http, asyncio.timeout(self.timeout_s), http.post(
                    self.url, data=body.encode(), headers=headers, allow_redirects=False) as reply:
                status, retry_after = reply.status, reply.headers.get("Retry-After")
        except TimeoutError:
            raise WebhookFailed(f"webhook {where} did not answer within {self.timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise WebhookFailed(f"webhook {where} failed: {type(exc).__name__}") from None
        if status == 429:
            after = _retry_after(retry_after)
            raise TryLater(f"webhook {where} answered HTTP 429: retry in {after:g}s", after)
        if status >= 500 or status == 408:
            raise WebhookFailed(f"webhook {where} answered HTTP {status}")
        if not 200 <= status < 300:
            raise Undeliverable(f"webhook {where} answered HTTP {status}")
        log.info("webhook %s delivered to %s (HTTP %d)", msg_id, where, status)
        return Posted(address=notice.target.id, ref=msg_id)  # the owner it was for, and the id receivers keep


def from_settings(settings: WebhookSettings) -> WebhookNotifier:
    if settings.webhook_url is None or settings.webhook_secret_file is None:
        raise ValueError("the webhook notifier needs WARDEN_WEBHOOK_URL and WARDEN_WEBHOOK_SECRET_FILE")
    return WebhookNotifier(settings.webhook_url, read_secret(settings.webhook_secret_file),
                           settings.webhook_timeout_s)
