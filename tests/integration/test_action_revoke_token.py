"""revoke_token against a real oidc-provider: RFC 7009 revocation, confirmed through RFC 7662 introspection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from playbooks.actions import ACTIONS
from playbooks.actions.base import ActionFailed, Credential
from playbooks.actions.revoke_token import RevokeToken, RevokeTokenParams
from service.demo.oauth_server import OAuthServer, start
from tests.support.action_context import context, matrix
from warden.contract.containment import Issuer

SECRET_ENV = "WARDEN_TEST_OAUTH_CLIENT_SECRET"
action = RevokeToken()
DEFAULT = RevokeTokenParams()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def issuers(oauth_issuer: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, Issuer]:
    """The matrix's issuers: the session's oidc-provider, its client secret by env reference."""
    monkeypatch.setenv(SECRET_ENV, oauth_issuer.client_secret)
    return {"local": _issuer(oauth_issuer)}


def _issuer(server: OAuthServer, **changes: str | None) -> Issuer:
    return Issuer.model_validate({**server.matrix_issuer(f"env:{SECRET_ENV}"), **changes})


async def _token(server: OAuthServer) -> str:
    token = await asyncio.to_thread(server.issue_token)
    assert (await asyncio.to_thread(server.introspect, token))["active"] is True
    return token


def _credential(server: OAuthServer, token: str | None) -> Credential:
    return Credential(id="cred-7", issuer=server.issuer, token=token)


async def test_registered_as_an_idempotent_token_action() -> None:
    assert isinstance(ACTIONS["revoke_token"], RevokeToken)
    assert action.idempotent and action.uses_token


async def test_revokes_the_token_and_introspection_confirms_it(
    oauth_issuer: OAuthServer, issuers: dict[str, Issuer], http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await _token(oauth_issuer)
    detail = await action.run(DEFAULT, context(http, credential=_credential(oauth_issuer, token), issuers=issuers))
    assert detail == {"issuer": "local", "credential_id": "cred-7", "revocation": "accepted", "confirmed": "true"}
    assert (await asyncio.to_thread(oauth_issuer.introspect, token)) == {"active": False}
    assert "cred-7" in caplog.text  # it did log, and
    assert token not in caplog.text  # never the token


async def test_revoking_again_and_an_unknown_token_both_succeed(
    oauth_issuer: OAuthServer, issuers: dict[str, Issuer], http: aiohttp.ClientSession,
) -> None:
    token = await _token(oauth_issuer)
    ctx = context(http, credential=_credential(oauth_issuer, token), issuers=issuers)
    first = await action.run(DEFAULT, ctx)
    again = await action.run(DEFAULT, ctx)  # an interrupted step that the engine runs once more
    assert first["confirmed"] == again["confirmed"] == "true"
    unknown = context(http, credential=_credential(oauth_issuer, "never-issued-by-this-server"), issuers=issuers)
    assert (await action.run(DEFAULT, unknown))["confirmed"] == "true"


async def test_the_issuer_can_be_named_by_the_step(
    oauth_issuer: OAuthServer, issuers: dict[str, Issuer], http: aiohttp.ClientSession,
) -> None:
    token = await _token(oauth_issuer)
    anonymous = Credential(id=None, issuer=None, token=token)  # the event did not say who issued it
    detail = await action.run({"issuer": "local"}, context(http, credential=anonymous, issuers=issuers))
    assert detail["confirmed"] == "true" and detail["credential_id"] == ""


async def test_a_wrong_client_secret_is_not_retryable_and_never_echoes_the_token(
    oauth_issuer: OAuthServer, issuers: dict[str, Issuer], http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await _token(oauth_issuer)
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    with pytest.raises(ActionFailed) as failed:
        await action.run(DEFAULT, context(http, credential=_credential(oauth_issuer, token), issuers=issuers))
    assert failed.value.retryable is False
    assert "HTTP 401 invalid_client" in failed.value.reason
    assert token not in failed.value.reason and token not in caplog.text
    assert (await asyncio.to_thread(oauth_issuer.introspect, token))["active"] is True


async def test_a_secret_reference_to_a_file_works(
    oauth_issuer: OAuthServer, http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(oauth_issuer.client_secret + "\n")
    issuers = {"local": _issuer(oauth_issuer, client_secret=f"file:{secret_file}")}
    token = await _token(oauth_issuer)
    detail = await action.run(DEFAULT, context(http, credential=_credential(oauth_issuer, token), issuers=issuers))
    assert detail["confirmed"] == "true"


async def test_an_unset_secret_is_not_retryable(
    oauth_issuer: OAuthServer, issuers: dict[str, Issuer], http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ActionFailed) as failed:
        await action.run(DEFAULT, context(http, credential=_credential(oauth_issuer, "t0k3n"), issuers=issuers))
    assert failed.value.retryable is False and SECRET_ENV in failed.value.reason


async def test_a_stopped_issuer_is_retryable(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    server = await asyncio.to_thread(start, log_path=tmp_path / "oauth.log")
    try:
        token = await _token(server)
        monkeypatch.setenv(SECRET_ENV, server.client_secret)
        issuers = {"local": _issuer(server)}
    finally:
        await asyncio.to_thread(server.stop)
    with pytest.raises(ActionFailed) as failed:
        await action.run(DEFAULT, context(http, credential=_credential(server, token), issuers=issuers))
    assert failed.value.retryable is True
    assert "unreachable" in failed.value.reason and token not in failed.value.reason


async def test_without_an_introspection_endpoint_the_revocation_is_unconfirmed(
    oauth_issuer: OAuthServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, oauth_issuer.client_secret)
    issuers = {"local": _issuer(oauth_issuer, introspection_endpoint=None)}
    token = await _token(oauth_issuer)
    detail = await action.run(DEFAULT, context(http, credential=_credential(oauth_issuer, token), issuers=issuers))
    assert detail["confirmed"] == "false" and "no introspection endpoint" in detail["confirmation"]
    assert (await asyncio.to_thread(oauth_issuer.introspect, token)) == {"active": False}  # revoked all the same


@pytest.mark.parametrize(
    ("params", "credential", "reason"),
    [
        ({}, None, "no token"),
        ({}, Credential(id="c", issuer="http://127.0.0.1:1", token=None), "no token"),
        ({}, Credential(id="c", issuer=None, token="t0k3n"), "names no issuer"),
        ({}, Credential(id="c", issuer="https://elsewhere.example", token="t0k3n"), "no issuer in the matrix"),
        ({"issuer": "absent"}, Credential(id="c", issuer=None, token="t0k3n"), "no issuer 'absent'"),
        ({"issuer": "local"}, Credential(id="c", issuer="https://elsewhere.example", token="t0k3n"), "issued by"),
    ],
)
async def test_what_no_retry_can_fix_fails_for_good(
    issuers: dict[str, Issuer], http: aiohttp.ClientSession, params: dict[str, str],
    credential: Credential | None, reason: str,
) -> None:
    with pytest.raises(ActionFailed) as failed:
        await action.run(params, context(http, credential=credential, issuers=issuers))
    assert failed.value.retryable is False
    assert reason in failed.value.reason
    assert "t0k3n" not in failed.value.reason


def test_check_names_an_issuer_the_matrix_lacks(issuers: dict[str, Issuer]) -> None:
    assert action.check(RevokeTokenParams(issuer="local"), matrix(issuers)) == []
    assert action.check(RevokeTokenParams(), matrix()) == []
    [(path, why)] = action.check({"issuer": "corp"}, matrix(issuers))
    assert path == "issuer" and "'corp'" in why and "local" in why
    assert "credential's issuer" in action.describe(DEFAULT)
