"""A local containment-hook receiver for tests: verifies every request with the `standardwebhooks` library, as a
user's receiver would, and records what it accepted. It can go down (connection refused, on the same port, so
the same URL comes back up), answer an error status, or hold requests, to exercise the webhook action's failure paths.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Delivery:
    """One request as it arrived, with whether its signature verified and the body it carried."""

    webhook_id: str
    verified: bool
    status: int
    body: bytes
    headers: dict[str, str]
    payload: Any = None


@dataclass
class WebhookReceiver:
    """The receiver; `accepted_ids` are the ids it verified and answered 2xx, in arrival order."""

    secret: str
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)  # the webhook-id of every request, as it arrives (before `hold`)
    status: int = 204  # what it answers a verified request while up
    retry_after: str | None = None  # sent as Retry-After with the answer (a 429's)
    port: int = 0
    hold: asyncio.Event | None = None  # when set to an unset Event, requests wait for it (to time a sender out)
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/warden?tenant=acme"

    @property
    def accepted_ids(self) -> list[str]:
        return [d.webhook_id for d in self.deliveries if d.verified and 200 <= d.status < 300]

    async def start(self) -> WebhookReceiver:
        if self.port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        app = web.Application()
        app.router.add_post("/hooks/warden", self._handle)
        self._runner = web.AppRunner(app, access_log=None)  # the logs a test checks are the sender's
        await self._runner.setup()
        await self.up()
        return self

    async def up(self) -> None:
        """Listen again on the same port: the same URL answers."""
        if self._site is None and self._runner is not None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await self._site.start()

    async def down(self) -> None:
        """Stop listening: requests are refused at connect."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        await self.down()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived.append(request.headers.get("webhook-id", ""))
        if self.hold is not None:
            await self.hold.wait()
        headers = dict(request.headers)
        webhook_id = request.headers.get("webhook-id", "")
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.deliveries.append(Delivery(webhook_id, False, 401, body, headers))
            return _closing(web.Response(status=401, text="bad signature"))
        self.deliveries.append(Delivery(webhook_id, True, self.status, body, headers, payload))
        extra = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        return _closing(web.Response(status=self.status, headers=extra))


def _closing(response: web.Response) -> web.Response:
    """No keep-alive: a kept connection would outlive `down()` and deliver to a receiver that is down."""
    response.force_close()
    return response
