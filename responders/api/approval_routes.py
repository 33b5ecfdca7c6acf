"""The approval API on the worker's web server: a gateway asks before an action (`POST /v1/approvals`) and reads the
answer (`GET /v1/approvals/{id}`, with a bounded long-poll); an owner may decide (`POST /v1/approvals/{id}/approve`
or `/deny`), checked like a Slack click. Gateway tokens come from WARDEN_GATEWAY_TOKENS (`gateway:token,...`), each
naming its gateway, which reads only its own requests; owner tokens from WARDEN_API_TOKENS, as for incidents."""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import ValidationError

from responders.api import authenticate
from responders.api.openapi import OPENAPI
from responders.approvals.desk import ApprovalDesk
from responders.notifiers.base import CONFLICT, DONE
from warden.contract.approval_requests import FINAL, MAX_WAIT_S, ApprovalAnswer, ApprovalRequest
from warden.contract.redact import redact_text
from warden.telemetry import metrics

log = logging.getLogger("warden.api")
TRANSPORT = "http"
_ID = r"[A-Za-z0-9._:-]{1,128}"


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Each problem as {field, reason}: the dotted path of the field and pydantic's message (no input echoed)."""
    return [{"field": ".".join(str(p) for p in err["loc"]) or "body", "reason": redact_text(err["msg"], 300)}
            for err in exc.errors(include_input=False, include_url=False)]


def _answer(answer: ApprovalAnswer) -> web.Response:
    return web.json_response(answer.model_dump(mode="json"), status=200 if answer.status in FINAL else 202)


class ApprovalApi:
    """The routes; `install` adds them (and /openapi.json when the incident API does not serve it)."""

    def __init__(self, desk: ApprovalDesk, tokens: list[tuple[bytes, str]], *, serve_openapi: bool,
                 owner_tokens: list[tuple[bytes, str]] | None = None) -> None:
        self.desk, self.tokens, self.serve_openapi = desk, tokens, serve_openapi
        self.owner_tokens = owner_tokens or []

    def install(self, app: web.Application) -> None:
        if self.serve_openapi:
            app.router.add_get("/openapi.json", self._openapi)
        if self.tokens:
            app.router.add_post("/v1/approvals", self._submit)
            app.router.add_get(f"/v1/approvals/{{id:{_ID}}}", self._show)
        if self.owner_tokens:
            app.router.add_post(f"/v1/approvals/{{id:{_ID}}}/{{decision:approve|deny}}", self._decide)

    async def _openapi(self, _: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    def _gateway(self, request: web.Request) -> tuple[str, str] | None:
        return authenticate(self.tokens, request.headers.get("Authorization", ""))

    @staticmethod
    def _unauthenticated() -> web.Response:
        metrics.API_REQUESTS.labels(outcome="unauthenticated").inc()
        return web.json_response({"error": "missing or invalid bearer token"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="warden"'})

    async def _submit(self, request: web.Request) -> web.Response:
        who = self._gateway(request)
        if who is None:
            return self._unauthenticated()
        gateway, identity = who
        body = await request.read()
        try:
            parsed = ApprovalRequest.model_validate_json(body)
        except ValidationError as exc:
            metrics.APPROVAL_INVALID.labels(transport=TRANSPORT).inc()
            metrics.API_REQUESTS.labels(outcome="invalid").inc()
            return web.json_response({"error": "invalid approval request", "fields": field_errors(exc)}, status=422)
        existing = await self.desk.answer(parsed.request_id) if parsed.request_id else None
        if existing is not None and not await self._owns(existing.request_id, gateway):
            metrics.API_REQUESTS.labels(outcome="conflict").inc()
            return web.json_response({"error": "request_id is taken by another gateway"}, status=409)
        answer = await self.desk.submit(parsed, gateway=gateway, transport=TRANSPORT, identity=identity)
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        return _answer(answer)

    async def _show(self, request: web.Request) -> web.Response:
        who = self._gateway(request)
        if who is None:
            return self._unauthenticated()
        gateway, _ = who
        raw = request.query.get("wait", "0")
        try:
            wait = float(raw)
            if not 0 <= wait <= MAX_WAIT_S:
                raise ValueError
        except ValueError:
            return web.json_response({"error": "invalid query", "fields": [
                {"field": "wait", "reason": f"seconds between 0 and {MAX_WAIT_S:g}"}]}, status=422)
        request_id = request.match_info["id"]
        if not await self._owns(request_id, gateway):  # another gateway's request looks absent
            metrics.API_REQUESTS.labels(outcome="not_found").inc()
            return web.json_response({"error": "no such approval request"}, status=404)
        answer = await self.desk.wait(request_id, wait)
        if answer is None:
            return web.json_response({"error": "no such approval request"}, status=404)
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        return _answer(answer)

    async def _owns(self, request_id: str, gateway: str) -> bool:
        record = await self.desk.store.get(request_id)
        return record is not None and record.gateway == gateway

    async def _decide(self, request: web.Request) -> web.Response:
        """An owner's decision: the token's owner must be one who may decide the request now."""
        who = authenticate(self.owner_tokens, request.headers.get("Authorization", ""))
        if who is None:
            return self._unauthenticated()
        owner_id, identity = who
        result = await self.desk.decide_as(request.match_info["id"], owner_id, f"{identity}:{owner_id}",
                                           approve=request.match_info["decision"] == "approve")
        if result is None:
            metrics.API_REQUESTS.labels(outcome="not_found").inc()
            return web.json_response({"error": "no such approval request"}, status=404)
        outcome, text = result
        if outcome != DONE:
            metrics.API_REQUESTS.labels(outcome=outcome).inc()
            return web.json_response({"error": text}, status=409 if outcome == CONFLICT else 403)
        metrics.API_REQUESTS.labels(outcome="ok").inc()
        answer = await self.desk.store.get(request.match_info["id"])
        return web.json_response({"id": request.match_info["id"], "status": answer.status if answer else "",
                                  "by": owner_id})
