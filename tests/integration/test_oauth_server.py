"""The OAuth server launcher that the demo and the revocation tests share: install once, start, answer, stop."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from service.demo import oauth_server
from service.demo.oauth_server import OAuthServer, OAuthServerUnavailable


def test_the_running_server_is_described_by_its_discovery_document(oauth_issuer: OAuthServer) -> None:
    assert oauth_issuer.issuer.startswith("http://127.0.0.1:")
    for endpoint in (oauth_issuer.token_endpoint, oauth_issuer.revocation_endpoint,
                     oauth_issuer.introspection_endpoint):
        assert endpoint.startswith(oauth_issuer.issuer + "/")
    token = oauth_issuer.issue_token()
    assert oauth_issuer.introspect(token)["client_id"] == oauth_issuer.agent_client_id
    assert oauth_issuer.client_secret not in repr(oauth_issuer)
    assert oauth_issuer.matrix_issuer("env:X")["client_secret"] == "env:X"


def test_stop_ends_the_server(tmp_path: Path) -> None:
    server = oauth_server.start(log_path=tmp_path / "oauth.log")
    server.stop()
    assert not server.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.issuer + "/.well-known/openid-configuration", timeout=5)
    server.stop()  # idempotent


def test_install_reuses_the_tree_for_the_same_lock_file(oauth_issuer: OAuthServer) -> None:
    tree = oauth_server.installed_dir()
    assert tree.name == f"oauth-{oauth_server.lock_hash()}"
    marker = (tree / "node_modules").stat().st_ino
    assert oauth_server.install() == tree
    assert (tree / "node_modules").stat().st_ino == marker
    out = io.StringIO()
    assert oauth_server.main(["install"], out) == 0
    assert "already installed" in out.getvalue()


def test_no_node_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no node, no npm
    monkeypatch.setenv("WARDEN_OAUTH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(OAuthServerUnavailable, match="node and npm not found on PATH"):
        oauth_server.install()
    with pytest.raises(OAuthServerUnavailable, match=r"Node\.js 20"):
        oauth_server.start()
