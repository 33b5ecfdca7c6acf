"""The incident API on the worker's web server: read incidents and their timelines, acknowledge, resolve, mark a
false positive, approve or deny containment and release a quarantine as a named owner (authorised against the frozen
owners like a Slack click: responders.owner_actions), verify the audit chains, and the printable evidence page.
`warden incidents|incident|audit` are its command-line client.

Bearer tokens come from WARDEN_API_TOKENS (`owner:token,...`); each acts as its owner. Tokens are compared in
constant time against every configured token. With none configured the API is not installed at all."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from responders.api.evidence import render
from responders.api.openapi import OPENAPI
from responders.owner_actions import ACTIONS, API, Result, act
from responders.silences import SilenceError, Silences
from responders.store.rooms import Store
from responders.trail import PAGE_MAX, TIERS, Filters, Trail
from warden.contract.actors import Actor
from warden.contract.matrix import parse_duration
from warden.telemetry import metrics

log = logging.getLogger("warden.api")
_HTTP = {Result.done: 200, Result.forbidden: 403, Result.not_found: 404, Result.conflict: 409}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiTokenError(ValueError):
    """WARDEN_API_TOKENS is not `owner:token[,owner:token]`."""


def parse_tokens(raw: str) -> list[tuple[bytes, str]]:
    """(token, owner id) pairs from `owner:token,owner:token`; a token shorter than 16 characters is refused."""
    pairs: list[tuple[bytes, str]] = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        owner, sep, token = part.partition(":")
        if not sep or not owner or not token:
            raise ApiTokenError("WARDEN_API_TOKENS: each entry must be owner:token")
        if len(token) < 16:
            raise ApiTokenError(f"WARDEN_API_TOKENS: the token of {owner} is shorter than 16 characters")
        pairs.append((token.encode(), owner))
    return pairs


def fingerprint(token: bytes) -> str:
    """What the timeline names a token by: enough to tell tokens apart, nothing to replay."""
    return hashlib.sha256(token).hexdigest()[:12]


def authenticate(tokens: list[tuple[bytes, str]], header: str) -> tuple[str, str] | None:
    """(name, api:<fingerprint>) of the bearer token in an Authorization header, or None. Every configured token
    is compared, in constant time, with no early exit."""
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return None
    given = presented.strip().encode()
    found: tuple[str, str] | None = None
    for token, name in tokens:
        if hmac.compare_digest(token, given):
            found = (name, f"{API}:{fingerprint(token)}")
    return found


class IncidentApi:
    """The routes; `install` adds them to the worker's aiohttp application."""

    def __init__(self, store: Store, trail: Trail, tokens: list[tuple[bytes, str]],
                 clock: Callable[[], datetime], on_change: Callable[[], None], *,
                 silences: Silences | None = None) -> None:
        self.store, self.trail, self.tokens, self.clock, self.on_change = store, trail, tokens, clock, on_change
        self.silences = silences or Silences(store.engine)

    def install(self, app: web.Application) -> None:
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_get("/incidents", self._guard(self._list))
        app.router.add_get("/incidents/{id:\\d+}", self._guard(self._show))
        app.router.add_get("/incidents/{id:\\d+}/evidence", self._guard(self._evidence))
        app.router.add_post(f"/incidents/{{id:\\d+}}/{{action:{'|'.join(ACTIONS)}}}", self._guard(self._act))
        app.router.add_get("/audit/verify", self._guard(self._verify))
        app.router.add_get("/silences", self._guard(self._silences))
        app.router.add_post("/silences", self._guard(self._add_silence))
        app.router.add_get("/silences/{id:\\d+}", self._guard(self._silence))
        app.router.add_post("/silences/{id:\\d+}/expire", self._guard(self._expire_silence))

    def _owner_of(self, request: web.Request) -> tuple[str, str] | None:
        return authenticate(self.tokens, request.headers.get("Authorization", ""))

    def _guard(self, handler: Callable[[web.Request, str, str], Awaitable[web.StreamResponse]]) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            who = self._owner_of(request)
            if who is None:
                metrics.API_REQUESTS.labels(outcome="unauthenticated").inc()
                return web.json_response({"error": "missing or invalid bearer token"}, status=401,
                                         headers={"WWW-Authenticate": 'Bearer realm="warden"'})
            return await handler(request, *who)

        return guarded

    async def _openapi(self, _: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def _list(self, request: web.Request, owner: str, identity: str) -> web.Response:
        q = request.query
        try:
            since = datetime.fromisoformat(q["since"]) if "since" in q else None
            if since is not None and since.tzinfo is None:
                raise ValueError("since needs a UTC offset")
            limit, offset = int(q.get("limit", "50")), int(q.get("offset", "0"))
            if not 1 <= limit <= PAGE_MAX or offset < 0:
                raise ValueError(f"limit is 1..{PAGE_MAX}, offset >= 0")
            if q.get("tier") not in (None, *TIERS):
                raise ValueError(f"tier is one of {', '.join(TIERS)}")
            group = int(q["group"]) if "group" in q else None
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        total, items = await self.trail.incidents(
            Filters(q.get("status"), q.get("workflow"), q.get("severity"), since, q.get("tier"), group),
            limit=limit, offset=offset)
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        return web.json_response({"total": total, "limit": limit, "offset": offset, "items": items})

    async def _item(self, request: web.Request) -> dict[str, Any] | web.Response:
        item = await self.trail.incident(int(request.match_info["id"]))
        if item is None:
            metrics.API_REQUESTS.labels(outcome="not_found").inc()
            return web.json_response({"error": "no such incident"}, status=404)
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        return item

    async def _show(self, request: web.Request, owner: str, identity: str) -> web.Response:
        item = await self._item(request)
        return item if isinstance(item, web.Response) else web.json_response(item)

    async def _evidence(self, request: web.Request, owner: str, identity: str) -> web.Response:
        item = await self._item(request)
        if isinstance(item, web.Response):
            return item
        return web.Response(text=render(item), content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                                     "X-Content-Type-Options": "nosniff"})

    async def _verify(self, request: web.Request, owner: str, identity: str) -> web.Response:
        result = await self.trail.verify()
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        return web.json_response(result.as_json())

    async def _act(self, request: web.Request, owner_id: str, identity: str) -> web.Response:
        incident_id, action = int(request.match_info["id"]), request.match_info["action"]
        outcome = await act(self.store, incident_id, action, owner_id, actor=Actor.of(identity), now=self.clock())
        metrics.API_REQUESTS.labels(outcome="ok" if outcome.result is Result.done else outcome.result.value).inc()
        if outcome.result is Result.forbidden:
            log.warning("api refused", extra={"incident_id": incident_id, "owner": owner_id, "action": action})
        if outcome.result is not Result.done:
            return web.json_response({"error": outcome.message}, status=_HTTP[outcome.result])
        self.on_change()
        return web.json_response({"id": incident_id, "action": action, "status": outcome.status, "by": owner_id,
                                  "message": outcome.message})

    # -- silences (amtool's verbs: add, query, expire) -------------------------------------------------------------

    async def _silences(self, request: web.Request, owner: str, identity: str) -> web.Response:
        q = request.query
        now = self.clock()
        labels = {k[len("label."):]: v for k, v in q.items() if k.startswith("label.")} or None
        items = await self.silences.query(now, expired=q.get("expired") in ("1", "true"), labels=labels)
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        return web.json_response({"items": [v.as_json(now) for v in items]})

    async def _silence(self, request: web.Request, owner: str, identity: str) -> web.Response:
        found = await self.silences.get(int(request.match_info["id"]))
        if found is None:
            metrics.API_REQUESTS.labels(outcome="not_found").inc()
            return web.json_response({"error": f"silence #{request.match_info['id']} does not exist"}, status=404)
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        return web.json_response(found.as_json(self.clock()))

    async def _add_silence(self, request: web.Request, owner: str, identity: str) -> web.Response:
        """A silence from JSON: matchers, comment, and either ends_at or duration (30m, 2h; seconds), optionally
        starts_at; author defaults to the token's owner. Any token's owner may silence (as amtool's users may):
        the silence's trail names the token and the author."""
        now = self.clock()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body is a JSON object")
            starts = _when(body.get("starts_at"), now)
            ends = (_when(body["ends_at"], now) if body.get("ends_at") is not None
                    else starts + _duration(body.get("duration", "1h")))
            matchers = body.get("matchers")
            if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
                raise ValueError("matchers is a list of strings such as rule=\"unapproved_tool\"")
            silence = await self.silences.add(
                matchers, starts_at=starts, ends_at=ends, comment=str(body.get("comment") or ""),
                author=str(body.get("author") or owner), identity=identity, now=now)
        except (ValueError, SilenceError) as exc:
            metrics.API_REQUESTS.labels(outcome="invalid").inc()
            return web.json_response({"error": str(exc)}, status=400)
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        log.warning("silence #%d added by %s: %s until %s", silence.id, owner, ", ".join(silence.matchers),
                    silence.ends_at.isoformat())
        return web.json_response(silence.as_json(now), status=201)

    async def _expire_silence(self, request: web.Request, owner: str, identity: str) -> web.Response:
        now = self.clock()
        silence_id = int(request.match_info["id"])
        before = await self.silences.get(silence_id)
        if before is None:
            metrics.API_REQUESTS.labels(outcome="not_found").inc()
            return web.json_response({"error": f"silence #{silence_id} does not exist"}, status=404)
        if before.state(now) == "expired":
            metrics.API_REQUESTS.labels(outcome="conflict").inc()
            return web.json_response({"error": f"silence #{silence_id} has expired already"}, status=409)
        after = await self.silences.expire(silence_id, identity=identity, actor=owner, now=now)
        assert after is not None  # it existed a moment ago and nothing deletes silences
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        log.warning("silence #%d expired by %s", silence_id, owner)
        return web.json_response(after.as_json(now))


def _when(value: object, now: datetime) -> datetime:
    """An ISO time with its offset (None: now)."""
    if value is None:
        return now
    if not isinstance(value, str):
        raise ValueError("times are ISO 8601 strings with an offset")
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValueError(f"{value!r} needs a UTC offset")
    return at


def _duration(value: object) -> timedelta:
    parsed = parse_duration(value)
    if not isinstance(parsed, timedelta) or parsed <= timedelta(0):
        raise ValueError(f"{value!r} is not a positive duration (30m, 2h, 1d or seconds)")
    return parsed
