"""`revoke_token`: revoke the agent's OAuth token at its issuer (RFC 7009), confirmed by introspection (RFC 7662).

Revocation is idempotent by the RFC: an unknown or already revoked token still gets 200, so an interrupted step is
simply run again. A 200 alone does not prove the token is dead (an issuer may silently ignore a token it will not
let this client revoke), so when the issuer has an introspection endpoint the step also asks whether the token is
still active, and a token that is fails the step. The token is never logged, returned or put in an error.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from playbooks.actions.base import ActionFailed, StepContext
from warden.contract.containment import Issuer
from warden.contract.matrix import Matrix
from warden.kit.secrets import SecretUnavailable

log = logging.getLogger(__name__)
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # an RFC 6749 error code; anything else is not echoed


class RevokeTokenParams(BaseModel):
    """Which issuer to revoke at: by default the one whose URL the credential names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str | None = Field(
        None, min_length=1, description="An issuer id from the matrix's `issuers`; default: the credential's issuer.")


class RevokeToken:
    """Revokes the finding's credential token at its issuer; see the module docstring."""

    name: ClassVar[str] = "revoke_token"
    summary: ClassVar[str] = "Revoke the agent's OAuth token at its issuer (RFC 7009), confirmed by RFC 7662."
    Params: ClassVar[type[BaseModel]] = RevokeTokenParams
    idempotent: ClassVar[bool] = True
    uses_token: ClassVar[bool] = True

    def check(self, params: Any, matrix: Matrix) -> list[tuple[str, str]]:
        p = _params(params)
        if p.issuer is not None and p.issuer not in matrix.issuers:
            known = ", ".join(sorted(matrix.issuers)) or "none"
            return [("issuer", f"no issuer {p.issuer!r} in the matrix's issuers (known: {known})")]
        return []

    def describe(self, params: Any) -> str:
        p = _params(params)
        where = f"issuer {p.issuer!r}" if p.issuer else "the credential's issuer"
        return f"revoke the agent's token at {where} (RFC 7009) and confirm it is inactive"

    async def run(self, params: Any, ctx: StepContext) -> dict[str, str]:
        p = _params(params)
        credential = ctx.credential
        token = credential.token if credential is not None else None
        if not token:
            raise ActionFailed("the finding carries no token to revoke", retryable=False)
        issuer_id, issuer = _pick_issuer(p, credential.issuer if credential is not None else None, ctx.matrix)
        try:
            secret = ctx.services.secret(issuer.client_secret)
        except SecretUnavailable as exc:
            raise ActionFailed(f"issuer {issuer_id!r}: client secret unavailable: {exc}", retryable=False) from None
        auth = _basic_auth(issuer.client_id, secret)
        detail = {"issuer": issuer_id, "credential_id": (credential.id if credential else None) or ""}
        try:
            async with asyncio.timeout(ctx.timeout_s):
                status, error = await _post(ctx.services.http, issuer.revocation_endpoint, token, auth)
                if status != 200:
                    raise _failure(issuer_id, "revocation", status, error)
                detail["revocation"] = "accepted"
                detail.update(await _confirm(ctx.services.http, issuer_id, issuer, token, auth))
        except TimeoutError:
            raise ActionFailed(f"issuer {issuer_id!r} did not answer within {ctx.timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise ActionFailed(f"issuer {issuer_id!r} unreachable: {type(exc).__name__}: {exc}") from None
        log.info("revoked credential %s at issuer %s (confirmed: %s)",
                 detail["credential_id"] or "(no id)", issuer_id, detail["confirmed"])
        return detail


def _params(params: Any) -> RevokeTokenParams:
    return params if isinstance(params, RevokeTokenParams) else RevokeTokenParams.model_validate(params)


def _same_issuer(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _pick_issuer(p: RevokeTokenParams, credential_issuer: str | None, matrix: Matrix) -> tuple[str, Issuer]:
    """The named issuer, or the one whose URL the credential names. A named issuer that is not the credential's
    is refused: it would answer 200 for a token it never issued, and the step would claim a revocation."""
    if p.issuer is not None:
        issuer = matrix.issuers.get(p.issuer)
        if issuer is None:
            raise ActionFailed(f"no issuer {p.issuer!r} in the matrix's issuers", retryable=False)
        if credential_issuer and not _same_issuer(credential_issuer, issuer.issuer):
            raise ActionFailed(
                f"the credential was issued by {credential_issuer!r}, not by issuer {p.issuer!r} ({issuer.issuer})",
                retryable=False)
        return p.issuer, issuer
    if not credential_issuer:
        raise ActionFailed("the credential names no issuer and the step names none", retryable=False)
    for issuer_id, issuer in matrix.issuers.items():
        if _same_issuer(credential_issuer, issuer.issuer):
            return issuer_id, issuer
    raise ActionFailed(f"no issuer in the matrix has the credential's issuer URL {credential_issuer!r}",
                       retryable=False)


def _basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """client_secret_basic headers: RFC 6749 §2.3.1 form-encodes both parts before the Basic encoding."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": f"Basic {base64.b64encode(pair).decode()}", "Accept": "application/json"}


async def _post(http: aiohttp.ClientSession, url: str, token: str, auth: dict[str, str]) -> tuple[int, str]:
    """POST the token (hinted as an access token); the status and, on an error, the RFC 6749 error code."""
    form = {"token": token, "token_type_hint": "access_token"}
    async with http.post(url, data=form, headers=auth, allow_redirects=False) as reply:
        if reply.status == 200:
            return 200, ""
        try:
            body = await reply.json(content_type=None)
        except ValueError:
            body = None
        code = body.get("error") if isinstance(body, dict) else None
        return reply.status, code if isinstance(code, str) and _ERROR_CODE.match(code) else ""


def _failure(issuer_id: str, what: str, status: int, error: str) -> ActionFailed:
    """A 5xx, 408 or 429 may pass; any other answer (invalid_client, a 404) needs a person to change something."""
    retryable = status >= 500 or status in (408, 429)
    return ActionFailed(f"issuer {issuer_id!r} answered the {what} with HTTP {status}{f' {error}' if error else ''}",
                        retryable=retryable)


async def _confirm(
    http: aiohttp.ClientSession, issuer_id: str, issuer: Issuer, token: str, auth: dict[str, str],
) -> dict[str, str]:
    """RFC 7662: the token must now be inactive. An issuer without introspection leaves it unconfirmed; one whose
    introspection fails leaves it unconfirmed with the reason (the revocation itself was accepted)."""
    if issuer.introspection_endpoint is None:
        return {"confirmed": "false", "confirmation": "the issuer has no introspection endpoint"}
    form = {"token": token, "token_type_hint": "access_token"}
    async with http.post(issuer.introspection_endpoint, data=form, headers=auth, allow_redirects=False) as reply:
        if reply.status != 200:
            return {"confirmed": "false", "confirmation": f"introspection answered HTTP {reply.status}"}
        try:
            body = await reply.json(content_type=None)
        except ValueError:
            body = None
    if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
        return {"confirmed": "false", "confirmation": "introspection answered without a boolean `active`"}
    if body["active"]:
        raise ActionFailed(f"issuer {issuer_id!r} accepted the revocation but introspection still reports the token "
                           "active (is this client allowed to revoke it?)")
    return {"confirmed": "true"}
