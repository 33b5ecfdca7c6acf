"""How the HTTP containment actions read each answer a receiver or an issuer can give: a scripted local server
(aiohttp) answers the status and body a test sets, and records what it was sent. The webhook's 2xx bounds and the
URL it shows; revoke_token's retryable statuses, the error codes it echoes, what introspection can answer, the
client authentication and how issuer URLs are matched."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from playbooks.actions.base import ActionFailed, Credential
from playbooks.actions.revoke_token import RevokeToken, RevokeTokenParams
from playbooks.actions.webhook import Webhook, WebhookParams
from tests.support.action_context import context
from warden.contract.containment import Issuer

SECRET_ENV = "WARDEN_TEST_SCRIPTED_SECRET"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789").decode()
TOKEN = "scripted-token-do-not-leak"


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON when not bytes; None: an empty body


@dataclass
class Scripted:
    """Answers each path with the Answer set for it; records (path, form or body, headers) of each request."""

    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # the raw body of each request
    location: str | None = None  # the Location header of a 3xx answer
    port: int = 0
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        form = dict(await request.post()) if request.content_type.endswith("urlencoded") else {}
        self.seen.append((request.path, {k: str(v) for k, v in form.items()}, dict(request.headers)))
        answer = self.answers.get(request.path, Answer())
        if 300 <= answer.status < 400 and self.location:
            return web.Response(status=answer.status, headers={"Location": self.location})
        if isinstance(answer.body, bytes):
            return web.Response(status=answer.status, body=answer.body)
        text = "" if answer.body is None else json.dumps(answer.body)
        return web.Response(status=answer.status, text=text, content_type="application/json")

    async def start(self) -> Scripted:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    s = await Scripted().start()
    try:
        yield s
    finally:
        assert s.runner is not None
        await s.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- webhook ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 299, 300, 499, 500])  # (a 1xx is never a final answer)
async def test_a_webhook_is_delivered_on_any_2xx_and_on_nothing_else(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, status: int,
) -> None:
    monkeypatch.setenv(SECRET_ENV, WHSEC)
    server.answers["/hook"] = Answer(status)
    params = WebhookParams(url=server.url("/hook"), secret=f"env:{SECRET_ENV}")
    if 200 <= status < 300:
        detail = await Webhook().run(params, context(http))
        assert detail == {"url": server.url("/hook"), "status": str(status), "webhook_id": "wh-42-contain-0"}
        return
    with pytest.raises(ActionFailed) as failed:
        await Webhook().run(params, context(http))
    assert f"HTTP {status}" in failed.value.reason
    assert failed.value.retryable is (status == 500)  # 300, 499: a person must change something
    assert [p for p, _, _ in server.seen] == ["/hook"]


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pw@hooks.example:8443/w?token=abc#frag", "https://hooks.example:8443/w"),
    ("https://hooks.example/w", "https://hooks.example/w"),
    ("http://[::1]:9000/w?x=1", "http://[::1]:9000/w"),
    ("http://[fe80::2]/w", "http://[fe80::2]/w"),
])
def test_the_webhook_shows_its_url_without_user_info_query_or_fragment_and_keeps_the_port(url: str,
                                                                                        shown: str) -> None:
    assert Webhook().describe({"url": url, "secret": "env:X"}) == f"POST a signed containment webhook to {shown}"


# -- revoke_token -----------------------------------------------------------------------------------------------


def _issuer(server: Scripted, *, introspection: bool = True, issuer: str = "https://idp.example/") -> Issuer:
    return Issuer(issuer=issuer, revocation_endpoint=server.url("/revoke"),
                  introspection_endpoint=server.url("/introspect") if introspection else None,
                  client_id="warden client/1", client_secret=f"env:{SECRET_ENV}")


async def _revoke(server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, *,
                  cred_issuer: str = "https://idp.example", **issuer: Any) -> dict[str, str]:
    monkeypatch.setenv(SECRET_ENV, "s3cr:et/+")
    ctx = context(http, credential=Credential(id="kid-1", issuer=cred_issuer, token=TOKEN),
                  issuers={"corp": _issuer(server, **issuer)})
    return await RevokeToken().run(RevokeTokenParams(), ctx)


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (599, True), (408, True), (429, True),
                                                   (499, False), (400, False), (401, False), (404, False),
                                                   (409, False), (430, False), (201, False), (302, False)])
async def test_a_revocation_answer_other_than_200_fails_retryable_only_when_waiting_can_help(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, status: int, retryable: bool,
) -> None:
    server.answers["/revoke"] = Answer(status)
    with pytest.raises(ActionFailed) as failed:
        await _revoke(server, http, monkeypatch)
    assert failed.value.retryable is retryable
    assert failed.value.reason == f"issuer 'corp' answered the revocation with HTTP {status}"
    assert [p for p, _, _ in server.seen] == ["/revoke"]  # nothing is introspected after a refusal


@pytest.mark.parametrize(("body", "shown"), [
    ({"error": "invalid_client"}, " invalid_client"),
    ({"error": "unsupported_token_type"}, " unsupported_token_type"),
    ({"error": "x" * 64}, " " + "x" * 64),
    ({"error": "x" * 65}, ""),  # too long for an error code: not echoed
    ({"error": "<script>"}, ""),  # not an RFC 6749 error code
    ({"error": f"bad {TOKEN}"}, ""),
    ({"error": 7}, ""),
    (["invalid_client"], ""),
    (b"<html>not json</html>", ""),
])
async def test_only_an_rfc_6749_error_code_is_echoed_from_a_refusal(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, body: Any, shown: str,
) -> None:
    server.answers["/revoke"] = Answer(400, body)
    with pytest.raises(ActionFailed) as failed:
        await _revoke(server, http, monkeypatch)
    assert failed.value.reason == f"issuer 'corp' answered the revocation with HTTP 400{shown}"
    assert failed.value.retryable is False and TOKEN not in failed.value.reason


async def test_the_token_is_posted_as_an_access_token_with_form_encoded_basic_auth(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.answers["/introspect"] = Answer(200, {"active": False})
    detail = await _revoke(server, http, monkeypatch)
    assert detail == {"issuer": "corp", "credential_id": "kid-1", "revocation": "accepted", "confirmed": "true"}
    (path1, form1, headers1), (path2, form2, headers2) = server.seen
    assert (path1, path2) == ("/revoke", "/introspect")
    assert form1 == form2 == {"token": TOKEN, "token_type_hint": "access_token"}
    expected = "Basic " + base64.b64encode(b"warden%20client%2F1:s3cr%3Aet%2F%2B").decode()
    assert headers1["Authorization"] == headers2["Authorization"] == expected
    assert headers1["Accept"] == "application/json"


@pytest.mark.parametrize(("answer", "confirmation"), [
    (Answer(500), "introspection answered HTTP 500"),
    (Answer(201, {"active": False}), "introspection answered HTTP 201"),
    (Answer(200, {"active": "false"}), "introspection answered without a boolean `active`"),
    (Answer(200, {}), "introspection answered without a boolean `active`"),
    (Answer(200, [False]), "introspection answered without a boolean `active`"),
    (Answer(200, b"not json"), "introspection answered without a boolean `active`"),
])
async def test_an_introspection_that_cannot_confirm_leaves_the_accepted_revocation_unconfirmed(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, answer: Answer,
    confirmation: str,
) -> None:
    server.answers["/introspect"] = answer
    detail = await _revoke(server, http, monkeypatch)
    assert detail == {"issuer": "corp", "credential_id": "kid-1", "revocation": "accepted", "confirmed": "false",
                      "confirmation": confirmation}


async def test_a_token_introspection_still_finds_active_fails_the_step_retryable(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.answers["/introspect"] = Answer(200, {"active": True})
    with pytest.raises(ActionFailed) as failed:
        await _revoke(server, http, monkeypatch)
    assert failed.value.retryable is True and "still reports the token active" in failed.value.reason


@pytest.mark.parametrize(("cred_issuer", "matrix_issuer"), [
    ("https://idp.example", "https://idp.example/"), ("https://idp.example/", "https://idp.example"),
    ("https://idp.example//", "https://idp.example")])
async def test_issuer_urls_match_whatever_their_trailing_slashes(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, cred_issuer: str,
    matrix_issuer: str,
) -> None:
    detail = await _revoke(server, http, monkeypatch, cred_issuer=cred_issuer, issuer=matrix_issuer,
                           introspection=False)
    assert detail["issuer"] == "corp" and detail["revocation"] == "accepted"
    # Named by the step, the same URL in another spelling is still the credential's issuer.
    ctx = context(http, credential=Credential(id="kid-1", issuer=cred_issuer, token=TOKEN),
                  issuers={"corp": _issuer(server, issuer=matrix_issuer, introspection=False)})
    assert (await RevokeToken().run({"issuer": "corp"}, ctx))["issuer"] == "corp"


async def test_the_first_matching_issuer_of_several_is_used(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, "s")
    other = Issuer(issuer="https://other.example", revocation_endpoint="http://127.0.0.1:1/none",
                   client_id="c", client_secret=f"env:{SECRET_ENV}")
    ctx = context(http, credential=Credential(id=None, issuer="https://idp.example", token=TOKEN),
                  issuers={"other": other, "corp": _issuer(server, introspection=False)})
    detail = await RevokeToken().run(RevokeTokenParams(), ctx)
    assert (detail["issuer"], detail["credential_id"]) == ("corp", "")
    assert [p for p, _, _ in server.seen] == ["/revoke"]


@pytest.mark.parametrize("path", ["/revoke", "/introspect"])
async def test_an_issuer_redirect_is_an_answer_not_followed(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, path: str,
) -> None:
    server.answers[path] = Answer(307)
    server.answers["/elsewhere"] = Answer(200, {"active": False})
    server.location = server.url("/elsewhere")
    if path == "/revoke":
        with pytest.raises(ActionFailed) as failed:
            await _revoke(server, http, monkeypatch)
        assert failed.value.reason == "issuer 'corp' answered the revocation with HTTP 307"
    else:
        detail = await _revoke(server, http, monkeypatch)
        assert detail["confirmed"] == "false" and detail["confirmation"] == "introspection answered HTTP 307"
    assert "/elsewhere" not in [p for p, _, _ in server.seen]


async def test_a_webhook_redirect_is_an_answer_not_followed(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, WHSEC)
    server.answers["/hook"] = Answer(307)
    server.location = server.url("/elsewhere")
    with pytest.raises(ActionFailed) as failed:
        await Webhook().run(WebhookParams(url=server.url("/hook"), secret=f"env:{SECRET_ENV}"), context(http))
    assert "HTTP 307" in failed.value.reason and failed.value.retryable is False
    assert [p for p, _, _ in server.seen] == ["/hook"]


async def test_the_webhook_body_is_canonical_json_and_names_a_credential_by_id_or_issuer(
    server: Scripted, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, WHSEC)
    params = WebhookParams(url=server.url("/hook"), secret=f"env:{SECRET_ENV}")
    for cred in (Credential(id="kid-1", issuer=None, token=TOKEN), Credential(id=None, issuer="https://i", token=None),
                 Credential(id=None, issuer=None, token=TOKEN), None):
        await Webhook().run(params, context(http, credential=cred))
    bodies = [server.bodies[i] for i in range(4)]
    for body in bodies:
        assert body == json.dumps(json.loads(body), separators=(",", ":"), sort_keys=True).encode()
    named = [json.loads(b)["data"].get("credential") for b in bodies]
    assert named == [{"id": "kid-1", "issuer": None}, {"id": None, "issuer": "https://i"}, None, None]


async def test_a_webhook_receiver_that_refuses_the_connection_is_named_by_the_system_error(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, WHSEC)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    params = WebhookParams(url=f"http://127.0.0.1:{port}/hook", secret=f"env:{SECRET_ENV}")
    with pytest.raises(ActionFailed) as failed:
        await Webhook().run(params, context(http))
    # The system's own words (here asyncio's "Connect call failed ..."), not only the exception's class name.
    assert failed.value.reason.startswith(f"webhook http://127.0.0.1:{port}/hook unreachable: Connect call failed")
    assert failed.value.retryable is True
