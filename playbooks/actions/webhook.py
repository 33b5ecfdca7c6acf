"""`webhook`: the generic containment hook into the user's own systems, signed with Standard Webhooks.

Any Standard Webhooks library verifies it (`webhook-id`, `webhook-timestamp`, `webhook-signature`). The id is the
step's idempotency key, the same on every attempt, restart and worker, so the receiver applies it once; the body is
the same bytes on every attempt too (only the timestamp header and so the signature change). Strings that came
from an agent (its id, the target) travel as JSON data only, never in a header or the URL.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator
from standardwebhooks import Webhook as Signer
from standardwebhooks.webhooks import EmptyWebhookSecretError

from playbooks.actions.base import ActionFailed, StepContext
from warden.contract.containment import SECRET_REF
from warden.contract.matrix import Matrix
from warden.kit.secrets import SecretUnavailable

log = logging.getLogger(__name__)
EVENT_TYPE = "warden.containment"
RESERVED = frozenset({"incident", "playbook", "step", "credential"})
JsonScalar = str | int | float | bool | None


class WebhookParams(BaseModel):
    """Where to send the hook, the reference to its signing secret, and static fields the receiver expects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://\S+$", description="The receiver's URL (no secret in its query, please).")
    secret: str = Field(pattern=SECRET_REF, description="Reference to the whsec_ signing secret: env:VAR or file:PATH.")
    payload: dict[str, JsonScalar] = Field(
        default_factory=dict, description="Static fields added to the body's `data` (beside the incident).")

    @field_validator("payload")
    @classmethod
    def _not_reserved(cls, value: dict[str, JsonScalar]) -> dict[str, JsonScalar]:
        clash = sorted(RESERVED & value.keys())
        if clash:
            raise ValueError(f"payload may not set {', '.join(clash)}: Warden fills those")
        return value


class Webhook:
    """Posts a signed description of the incident to the user's receiver; see the module docstring."""

    name: ClassVar[str] = "webhook"
    summary: ClassVar[str] = "POST a Standard Webhooks-signed containment request to your own system."
    Params: ClassVar[type[BaseModel]] = WebhookParams
    idempotent: ClassVar[bool] = True
    uses_token: ClassVar[bool] = False

    def check(self, params: Any, matrix: Matrix) -> list[tuple[str, str]]:
        _params(params)  # the model holds every rule; nothing here depends on the matrix
        return []

    def describe(self, params: Any) -> str:
        return f"POST a signed containment webhook to {_public(_params(params).url)}"

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        p = _params(params)
        signer = _signer(ctx, p.secret)
        body = json.dumps(_body(p, ctx), separators=(",", ":"), sort_keys=True)
        now = datetime.now(UTC)
        headers = {
            "webhook-id": ctx.key,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(ctx.key, now, body),
            "content-type": "application/json",
            "user-agent": "warden-containment",
        }
        where = _public(p.url)
        try:
            async with asyncio.timeout(ctx.timeout_s), ctx.services.http.post(
                p.url, data=body.encode(), headers=headers, allow_redirects=False,
            ) as reply:
                status = reply.status
        except TimeoutError:
            raise ActionFailed(f"webhook {where} did not answer within {ctx.timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise ActionFailed(f"webhook {where} unreachable: {exc.os_error.strerror or type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise ActionFailed(f"webhook {where} failed: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            retryable = status >= 500 or status in (408, 429)
            raise ActionFailed(f"webhook {where} answered HTTP {status}", retryable=retryable)
        log.info("webhook %s delivered to %s (HTTP %d)", ctx.key, where, status)
        return {"url": where, "status": str(status), "webhook_id": ctx.key}


def _params(params: Any) -> WebhookParams:
    return params if isinstance(params, WebhookParams) else WebhookParams.model_validate(params)


def _signer(ctx: StepContext, ref: str) -> Signer:
    """The signer for the referenced secret; a missing or malformed secret needs a person, not a retry."""
    try:
        return Signer(ctx.services.secret(ref))
    except SecretUnavailable as exc:
        raise ActionFailed(f"webhook signing secret unavailable: {exc}", retryable=False) from None
    except (binascii.Error, ValueError, EmptyWebhookSecretError):
        raise ActionFailed(f"the webhook signing secret {ref} is not a whsec_ base64 secret",
                           retryable=False) from None


def _body(p: WebhookParams, ctx: StepContext) -> dict[str, Any]:
    """The Standard Webhooks payload shape: type, timestamp (the incident's opening, so retries send the same
    bytes) and data. Never the token: the credential is named by id and issuer only."""
    incident = ctx.incident
    data: dict[str, Any] = {
        **p.payload,
        "incident": {
            "id": incident.id,
            "rule": incident.rule,
            "severity": incident.severity,
            "title": incident.title,
            "agent_id": incident.agent_id,
            "workflow": incident.workflow,
            "target": incident.target,
        },
        "playbook": ctx.playbook,
        "step": ctx.index,
    }
    if ctx.credential is not None and (ctx.credential.id or ctx.credential.issuer):
        data["credential"] = {"id": ctx.credential.id, "issuer": ctx.credential.issuer}
    return {"type": EVENT_TYPE, "timestamp": incident.opened_at.isoformat(), "data": data}


def _public(url: str) -> str:
    """The URL without user info, query or fragment, which may carry a receiver's token: safe for the timeline."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
