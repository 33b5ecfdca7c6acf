"""The OpenAPI 3.1 document of the incident and approval APIs, served at /openapi.json for generated clients."""

from __future__ import annotations

from typing import Any

from warden.contract.approval_requests import MAX_WAIT_S, ApprovalAnswer, ApprovalRequest

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_AUTH_ERRORS = {"401": {"description": "Missing or invalid bearer token", **_ERR}}


def _query(name: str, schema: dict[str, Any], about: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": about}


def _act(what: str, who: str = "the responder or an owner of the escalation chain") -> dict[str, Any]:
    return {"post": {
        "summary": f"{what[0].upper()}{what[1:]} as the token's owner (authorised like a Slack click: {who})",
        "parameters": [_ID],
        "responses": {"200": {"description": "Done", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"id": {"type": "integer"}, "action": {"type": "string"},
                                             "status": {"type": "string"}, "message": {"type": "string"},
                                             "by": {"type": "string"}}}}}},
                      **_AUTH_ERRORS,
                      "403": {"description": "The token's owner may not act on this incident (recorded)", **_ERR},
                      "404": {"description": "No such incident", **_ERR},
                      "409": {"description": "Not possible from the incident's status, or it changed meanwhile",
                              **_ERR}}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Warden incident API", "version": "1",
             "description": "Incidents, their hash-chained timelines and evidence. Strings that came from agents "
                            "are redacted; render them as text."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "A token from WARDEN_API_TOKENS (owner:token)"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            "Entry": {"type": "object", "properties": {
                "seq": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                "kind": {"type": "string"}, "actor": {"type": "string", "description": "warden or an owner id"},
                "identity": {"type": ["string", "null"],
                             "description": "A Slack user id, or notifier:user (api:<token>, break-glass:<user>)"},
                "policy_sha256": {"type": ["string", "null"]}, "detail": {"type": "object"},
                "prev_hash": {"type": "string"}, "hash": {"type": "string"}}},
            "Incident": {"type": "object", "properties": {
                "id": {"type": "integer"}, "status": {"type": "string"}, "rule": {"type": "string"},
                "tier": {"enum": ["page", "review", "log"], "description": "page: notified at once; review: in "
                         "the responder's periodic digest; log: recorded only"},
                "severity": {"type": "string"}, "title": {"type": "string"}, "agent_id": {"type": "string"},
                "workflow": {"type": ["string", "null"]}, "target": {"type": "string"}, "count": {"type": "integer"},
                "opened_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"}, "policy_sha256": {"type": "string"},
                "owners": {"type": "object"}, "evidence": {"type": "object"},
                "group": {"type": ["integer", "null"], "description": "The group (digest) of its pages"},
                "group_role": {"enum": ["leader", "member", None], "description": "leader: it paged; member: its "
                               "group's digest carried it"},
                "silenced_by": {"type": ["integer", "null"], "description": "The silence that muted its pages"},
                "inhibited_by": {"type": ["integer", "null"], "description": "The open incident that inhibited "
                                 "its pages"}}},
            "Silence": {"type": "object", "properties": {
                "id": {"type": "integer"}, "matchers": {"type": "array", "items": {"type": "string"}},
                "starts_at": {"type": "string", "format": "date-time"},
                "ends_at": {"type": "string", "format": "date-time"}, "comment": {"type": "string"},
                "author": {"type": "string"}, "created_by": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"}, "expired_by": {"type": ["string", "null"]},
                "state": {"enum": ["pending", "active", "expired"]}}},
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/incidents": {"get": {
            "summary": "Incidents, newest first",
            "parameters": [
                _query("status", {"enum": ["open", "acknowledged", "resolved", "false_positive"]}, "Lifecycle"),
                _query("workflow", {"type": "string"}, "Workflow name"),
                _query("severity", {"enum": ["low", "medium", "high", "critical"]}, "Severity"),
                _query("since", {"type": "string", "format": "date-time"}, "Updated at or after (with offset)"),
                _query("tier", {"enum": ["page", "review", "log"]}, "Response tier"),
                _query("group", {"type": "integer"}, "The group whose pages to list (a digest's link)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size"),
                _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "Items to skip"),
            ],
            "responses": {"200": {"description": "One page", "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"},
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Incident"}}}}}}},
                          "400": {"description": "A bad filter", **_ERR}, **_AUTH_ERRORS}}},
        "/incidents/{id}": {"get": {
            "summary": "One incident with its timeline (chain order), containment ledger and chain verdict",
            "parameters": [_ID],
            "responses": {"200": {"description": "The incident", "content": {"application/json": {"schema": {
                "allOf": [{"$ref": "#/components/schemas/Incident"}, {"type": "object", "properties": {
                    "timeline": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}},
                    "containment": {"type": "array", "items": {"type": "object"}},
                    "chain": {"type": "object"}}}]}}}},
                          "404": {"description": "No such incident", **_ERR}, **_AUTH_ERRORS}}},
        "/incidents/{id}/evidence": {"get": {
            "summary": "Printable HTML evidence page",
            "parameters": [_ID],
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                          "404": {"description": "No such incident", **_ERR}, **_AUTH_ERRORS}}},
        "/incidents/{id}/ack": _act("acknowledge the incident"),
        "/incidents/{id}/resolve": _act("resolve the incident"),
        "/incidents/{id}/false_positive": _act("close the incident as a false positive"),
        "/incidents/{id}/approve": _act("approve the containment the incident's playbooks wait for",
                                        "the named approver, or an approving owner it climbed to"),
        "/incidents/{id}/deny": _act("deny the containment the incident's playbooks wait for",
                                     "the named approver, or an approving owner it climbed to"),
        "/incidents/{id}/release": _act("request the release of the incident's quarantine",
                                        "the named approver, or an approving owner it climbed to"),
        "/silences": {
            "get": {"summary": "Active and pending silences, newest first (amtool silence query)",
                    "parameters": [_query("expired", {"type": "boolean"}, "Expired ones too")],
                    "responses": {"200": {"description": "The silences", "content": {"application/json": {
                        "schema": {"type": "object", "properties": {"items": {"type": "array", "items": {
                            "$ref": "#/components/schemas/Silence"}}}}}}}, **_AUTH_ERRORS}},
            "post": {"summary": "Add a silence (amtool silence add): matchers, comment, duration or ends_at, "
                                "optionally starts_at and author (default: the token's owner)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["matchers", "comment"], "properties": {
                             "matchers": {"type": "array", "items": {"type": "string"}},
                             "comment": {"type": "string"}, "author": {"type": "string"},
                             "duration": {"type": "string", "description": "30m, 2h, 1d; default 1h"},
                             "starts_at": {"type": "string", "format": "date-time"},
                             "ends_at": {"type": "string", "format": "date-time"}}}}}},
                     "responses": {"201": {"description": "Made", "content": {"application/json": {"schema": {
                         "$ref": "#/components/schemas/Silence"}}}},
                                   "400": {"description": "Invalid (no matcher, comment or author; bad times)",
                                           **_ERR}, **_AUTH_ERRORS}}},
        "/silences/{id}": {"get": {"summary": "One silence", "parameters": [_ID], "responses": {
            "200": {"description": "The silence", "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Silence"}}}},
            "404": {"description": "No such silence", **_ERR}, **_AUTH_ERRORS}}},
        "/silences/{id}/expire": {"post": {"summary": "Expire a silence now (amtool silence expire)",
                                           "parameters": [_ID], "responses": {
            "200": {"description": "Expired", "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Silence"}}}},
            "404": {"description": "No such silence", **_ERR},
            "409": {"description": "It has expired already", **_ERR}, **_AUTH_ERRORS}}},
        "/audit/verify": {"get": {
            "summary": "Recompute every hash chain (incident timelines, approvals, refused requests)",
            "responses": {"200": {"description": "The verdict; `breaks` names the first broken link of each chain",
                                  "content": {"application/json": {"schema": {"type": "object", "properties": {
                                      "ok": {"type": "boolean"}, "chains": {"type": "integer"},
                                      "entries": {"type": "integer"},
                                      "breaks": {"type": "array", "items": {"type": "object"}}}}}}},
                          **_AUTH_ERRORS}}},
    },
}


def _schemas() -> dict[str, Any]:
    """The approval request and answer schemas from the contract's models, their parts hoisted to components."""
    out: dict[str, Any] = {}
    for model in (ApprovalRequest, ApprovalAnswer):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


_ANSWER = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApprovalAnswer"}}}}
_INVALID = {"description": "Invalid: `fields` names each field and the reason", "content": {"application/json": {
    "schema": {"type": "object", "properties": {"error": {"type": "string"}, "fields": {"type": "array", "items": {
        "type": "object", "properties": {"field": {"type": "string"}, "reason": {"type": "string"}}}}}}}}}
_GATEWAY_AUTH = {"401": {"description": "Missing or invalid bearer token (WARDEN_GATEWAY_TOKENS)", **_ERR}}
OPENAPI["components"]["schemas"].update(_schemas())
OPENAPI["info"]["description"] += (" Approvals (docs/approvals.md): a gateway asks before a high-risk action with a "
                                   "token from WARDEN_GATEWAY_TOKENS (gateway:token).")
OPENAPI["paths"].update({
    "/v1/approvals": {"post": {
        "summary": "Ask before an action: the final verdict at once (allowed / denied), or pending with its id",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ApprovalRequest"}}}},
        "responses": {"200": {"description": "Final answer (allowed or denied)", **_ANSWER},
                      "202": {"description": "Pending: the named approver was asked; GET it with wait=", **_ANSWER},
                      "409": {"description": "request_id belongs to another gateway", **_ERR},
                      "422": _INVALID, **_GATEWAY_AUTH}}},
    "/v1/approvals/{id}": {"get": {
        "summary": "The answer; `wait` long-polls up to that many seconds for a final one",
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                       _query("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
                              "Seconds to wait for a final answer")],
        "responses": {"200": {"description": "Final: allowed, denied, approved or expired", **_ANSWER},
                      "202": {"description": "Still pending after the wait", **_ANSWER},
                      "404": {"description": "No such request (or another gateway's)", **_ERR},
                      "422": _INVALID, **_GATEWAY_AUTH}}},
})


def _decision(decision: str) -> dict[str, Any]:
    return {"post": {
        "summary": f"{decision.capitalize()} the request as the owner of a WARDEN_API_TOKENS token (checked like a "
                   "Slack click: the named approver, or an approving owner it escalated to; refusals are recorded)",
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "Decided", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"id": {"type": "string"}, "status": {"type": "string"},
                                             "by": {"type": "string"}}}}}},
                      **_AUTH_ERRORS,
                      "403": {"description": "The token's owner may not decide this request (recorded)", **_ERR},
                      "404": {"description": "No such request", **_ERR},
                      "409": {"description": "Already decided or expired (recorded)", **_ERR}}}}


for _decided in ("approve", "deny"):
    OPENAPI["paths"][f"/v1/approvals/{{id}}/{_decided}"] = _decision(_decided)
