"""The real OAuth server (npm `oidc-provider`) for the session: the revocation tests run against it, not a fake.

`.ci/run` installs its locked Node dependencies before the tests (`python3 service/demo/oauth_server.py install`);
the fixture installs them the same way, into the same cache, when they are missing. No Node.js is a failure with
the reason, never a skip: a skipped revocation test would hide that revocation is untested.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.demo import oauth_server


@pytest.fixture(scope="session")
def oauth_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[oauth_server.OAuthServer]:
    """One running oidc-provider for the session, never stopped early: a test that needs one down starts its own."""
    log_path = tmp_path_factory.mktemp("oauth") / "oauth-server.log"
    try:
        server = oauth_server.start(log_path=log_path)
    except oauth_server.OAuthServerUnavailable as exc:
        pytest.fail(f"the OAuth test server cannot run: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
