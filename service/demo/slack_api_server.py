"""A local Slack Web API for the demo (which shows an approval given in it) and the tests: records every request
body, fails on demand, and can enforce Slack's posting limit per channel (`rate`, `burst`: a token bucket per
channel; a chat.postMessage beyond it is answered 429 with Retry-After, as Slack does).

Point the real slack-sdk client at `server.base_url`, or several workers each at their own `server.url_for(name)`
so that every request and message says which worker made it. It implements the methods Warden calls
(chat.postMessage, chat.update, chat.postEphemeral, conversations.open, conversations.history and
conversations.replies, paged by cursor)
and can answer 429 with Retry-After, a 500, `ok: false` or a slow reply, per method and for a number of calls.
`watch` runs a test's function on each request once it took effect, before the reply (to stop a worker there).

Run it alone for the demo: `python -m service.demo.slack_api_server --port 8099 [--rate 1 --burst 3]`, then
`WARDEN_SLACK_TOKEN=xoxb-local WARDEN_SLACK_API_URL=http://127.0.0.1:8099/api/ warden demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web


@dataclass
class Request:
    """One API call as it arrived: method, raw body, parsed arguments and headers."""

    method: str
    body: bytes
    args: dict[str, Any]
    headers: dict[str, str]
    worker: str | None = None  # the name in the URL the request came to (`url_for`)
    at: float = 0.0  # time.time() when it arrived


@dataclass
class Fault:
    """How the next `times` calls to `method` (any method when None) misbehave; with `channel`, only calls to it."""

    method: str | None
    times: int
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    delay_s: float = 0.0
    channel: str | None = None


@dataclass
class Bucket:
    """One channel's posting allowance: `tokens` as of `at` (time.monotonic())."""

    tokens: float
    at: float


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    updates: int = 0
    worker: str | None = None  # who posted it (`url_for`)
    at: float = 0.0  # time.time() when it was posted


@dataclass
class SlackApiServer:
    """The fake workspace: messages by channel, every request, and the faults still to apply."""

    token: str | None = None
    rate: float | None = None  # posts per second per channel; None: no limit
    burst: int = 3  # posts a channel takes at once before the rate applies
    requests: list[Request] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    watchers: list[Callable[[Request], None]] = field(default_factory=list)
    base_url: str = ""
    limited: list[Request] = field(default_factory=list)  # posts answered 429 by the per-channel limit
    _runner: web.AppRunner | None = None
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _buckets: dict[str, Bucket] = field(default_factory=dict)

    # -- programming faults --------------------------------------------------------------------------------------

    def fail(self, method: str | None = None, *, times: int = 1, status: int = 200, error: str | None = None,
             retry_after: int | None = None, delay_s: float = 0.0, channel: str | None = None) -> None:
        """Make the next `times` calls misbehave: a status (429, 500), `ok: false` with `error`, or a delay; with
        `channel`, only calls to that channel.

        A delayed call is still carried out (the message is posted) before the late reply, as when a reply is
        lost after Slack acted on the request."""
        self.faults.append(Fault(method, times, status, error, retry_after, delay_s, channel))

    def watch(self, watcher: Callable[[Request], None]) -> None:
        """Call `watcher(request)` for every request, after it took effect (a message is posted) and before the
        reply leaves (a delay still to come)."""
        self.watchers.append(watcher)

    def url_for(self, worker: str) -> str:
        """The base URL for one worker: its requests and messages carry `worker`."""
        return self.base_url.replace("/api/", f"/w/{worker}/api/")

    # -- reading what happened -----------------------------------------------------------------------------------

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def roots(self, channel: str | None = None) -> list[Message]:
        """Top-level messages (not thread replies), optionally in one channel."""
        return [m for m in self.messages if m.thread_ts is None and (channel is None or m.channel == channel)]

    def replies(self, root: Message) -> list[Message]:
        return [m for m in self.messages if m.thread_ts == root.ts and m.channel == root.channel]

    def posts(self, channel: str | None = None) -> list[Request]:
        """chat.postMessage calls that posted (not answered 429), optionally to one channel."""
        return [r for r in self.calls("chat.postMessage") if r not in self.limited
                and (channel is None or self._dm(str(r.args.get("channel", ""))) == channel)]

    def most_in_a_second(self, channel: str | None = None) -> int:
        """The most posts to one channel (or to `channel`) that arrived within any one second (a sliding window
        [t, t + 1s))."""
        by_channel: dict[str, list[float]] = {}
        for r in self.posts(channel):
            by_channel.setdefault(self._dm(str(r.args.get("channel", ""))), []).append(r.at)
        most = 0
        for times in by_channel.values():
            times.sort()
            start = 0
            for end, at in enumerate(times):
                while at - times[start] >= 1.0:
                    start += 1
                most = max(most, end - start + 1)
        return most

    def bodies(self) -> str:
        """Every request body received, as text: for asserting what must never leave Warden."""
        return "\n".join(r.body.decode("utf-8", "replace") for r in self.requests)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SlackApiServer:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        app.router.add_get("/api/{method}", self._handle)  # slack-sdk reads conversations.history with GET
        app.router.add_post("/w/{worker}/api/{method}", self._handle)
        app.router.add_get("/w/{worker}/api/{method}", self._handle)
        # Slow replies are still sleeping at teardown; do not wait a minute for them.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{host}:{bound}/api/"
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    # -- the API -------------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await request.read()
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json" and body:
            args.update(json.loads(body))
        elif body:
            args.update(parse_qsl(body.decode()))
        call = Request(method, body, args, dict(request.headers), request.match_info.get("worker"), time.time())
        self.requests.append(call)
        fault = self._take_fault(method, str(args.get("channel", "")))
        if fault is None and method == "chat.postMessage":
            wait = self._spend(self._dm(str(args.get("channel", ""))))
            if wait > 0:
                self.limited.append(call)
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers={"Retry-After": str(max(1, math.ceil(wait)))})
        if fault and fault.status != 200:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            error = "ratelimited" if fault.status == 429 else "internal_error"
            return web.json_response({"ok": False, "error": error}, status=fault.status, headers=headers)
        if fault and fault.error:
            return web.json_response({"ok": False, "error": fault.error})
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        result = handler(args) if handler else {"ok": False, "error": "unknown_method"}
        if method == "chat.postMessage" and result.get("ok"):
            self.messages[-1].worker = call.worker
        for watcher in self.watchers:
            watcher(call)
        if fault and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        return web.json_response(result)

    def _take_fault(self, method: str, channel: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method in (None, method) and fault.channel in (None, channel):
                fault.times -= 1
                return fault
        return None

    def _spend(self, channel: str) -> float:
        """Take one post from the channel's bucket: 0 when it had one, else the seconds until it will."""
        if self.rate is None or not channel:
            return 0.0
        now = time.monotonic()
        bucket = self._buckets.setdefault(channel, Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    @staticmethod
    def _dm(channel: str) -> str:
        return "D" + channel[1:] if channel[:1] in ("U", "W") else channel

    def _find(self, channel: str, ts: str) -> Message | None:
        return next((m for m in self.messages if m.channel == channel and m.ts == ts), None)

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        channel = self._dm(channel)
        ts = f"{int(time.time())}.{next(self._seq):06d}"
        blocks = args.get("blocks")
        metadata = args.get("metadata")
        msg = Message(channel=channel, ts=ts, text=args["text"], thread_ts=args.get("thread_ts"),
                      blocks=json.loads(blocks) if isinstance(blocks, str) else blocks,
                      metadata=json.loads(metadata) if isinstance(metadata, str) else metadata, at=time.time())
        self.messages.append(msg)
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": msg.text, "ts": ts}}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._find(args.get("channel", ""), args.get("ts", ""))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        msg.text = args.get("text", msg.text)
        blocks = args.get("blocks", msg.blocks)
        msg.blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        msg.updates += 1
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("user") or not args.get("channel"):
            return {"ok": False, "error": "user_not_in_channel"}
        self.ephemerals.append(args)
        return {"ok": True, "message_ts": f"{int(time.time())}.{next(self._seq):06d}"}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users", ""))
        if not users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": self._dm(users.split(",", maxsplit=1)[0])}}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel", "")
        oldest = float(args.get("oldest") or 0)
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [m for m in reversed(self.roots(channel)) if float(m.ts.split(".")[0]) >= int(oldest)]
        return self._page(found, args, with_metadata)

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """The thread's parent first, then its replies, oldest first (as Slack answers)."""
        parent = self._find(args.get("channel", ""), args.get("ts", ""))
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        return self._page([parent, *self.replies(parent)], args, with_metadata)

    @staticmethod
    def _page(found: list[Message], args: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
        limit = int(args.get("limit") or 100)
        start = int(args.get("cursor") or 0)
        out = []
        for m in found[start:start + limit]:
            item: dict[str, Any] = {"type": "message", "ts": m.ts, "text": m.text}
            if m.thread_ts:
                item["thread_ts"] = m.thread_ts
            if with_metadata and m.metadata:
                item["metadata"] = m.metadata
            out.append(item)
        more = len(found) > start + limit
        return {"ok": True, "messages": out, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}


async def _serve(port: int, rate: float | None, burst: int) -> None:
    server = await SlackApiServer(rate=rate, burst=burst).start(port=port)
    print(f"local Slack Web API at {server.base_url}", flush=True)
    try:
        while True:
            await asyncio.sleep(5)
            print(f"{len(server.roots())} root messages, {len(server.messages)} messages, "
                  f"{len(server.requests)} requests, {len(server.limited)} answered 429", flush=True)
    finally:
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--rate", type=float, default=None, help="Posts per second per channel (unset: no limit).")
    parser.add_argument("--burst", type=int, default=3, help="Posts a channel takes at once.")
    options = parser.parse_args()
    asyncio.run(_serve(options.port, options.rate, options.burst))
