"""A real OAuth 2.0 server (npm `oidc-provider`) on 127.0.0.1, for `warden demo` and the revocation tests.

Standard library only, so CI can install the Node dependencies with `python3 service/demo/oauth_server.py install`
before any virtualenv exists. The server script and its lock file ship in the package (`warden/examples/oauth/`);
`npm ci` installs the locked dependencies once into a cache directory keyed by the lock file's hash
(`~/.cache/warden/oauth-<hash>`, or under WARDEN_OAUTH_CACHE), which later runs reuse.

The server knows two clients, each with a fresh random secret per start: Warden's responder client (may revoke
and introspect any token the server issued) and an agent client (gets client_credentials tokens to revoke).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

SOURCE = Path(__file__).resolve().parents[2] / "warden" / "examples" / "oauth"  # the floor's package data (wheel)
SCRIPT = "server.mjs"
LOCK = "package-lock.json"
READY = "warden_oauth_ready"
RESPONDER_CLIENT_ID = "warden-responder"
AGENT_CLIENT_ID = "demo-agent"


class OAuthServerUnavailable(RuntimeError):
    """The server cannot run here (no Node.js or npm, `npm ci` failed, or it did not start); says why, plainly."""


def missing_tools() -> str | None:
    """Why Node.js cannot run the server on this machine, or None when `node` and `npm` are on PATH."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found on PATH: the OAuth server needs Node.js 20 or later with npm"
    return None


def lock_hash(source: Path = SOURCE) -> str:
    """The first 16 hex digits of the lock file's sha256: the cache key of an installed dependency tree."""
    return hashlib.sha256((source / LOCK).read_bytes()).hexdigest()[:16]


def cache_root() -> Path:
    """Where installed dependency trees live: WARDEN_OAUTH_CACHE, else $XDG_CACHE_HOME/warden or ~/.cache/warden."""
    configured = os.environ.get("WARDEN_OAUTH_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "warden"


def installed_dir(root: Path | None = None, source: Path = SOURCE) -> Path:
    """The directory that holds (or will hold) node_modules for the shipped lock file."""
    return (root or cache_root()) / f"oauth-{lock_hash(source)}"


def install(root: Path | None = None, *, source: Path = SOURCE) -> Path:
    """The directory with the locked dependencies installed, running `npm ci` only when it is not there yet.

    It is built in a temporary sibling and renamed into place whole, so a concurrent or interrupted install never
    leaves a half-filled tree that a later run would trust. Raises OAuthServerUnavailable with npm's output."""
    target = installed_dir(root, source)
    if (target / "node_modules" / "oidc-provider" / "package.json").is_file():
        return target
    reason = missing_tools()
    if reason:
        raise OAuthServerUnavailable(reason)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        for name in ("package.json", LOCK):
            shutil.copyfile(source / name, staging / name)
        done = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev"],
            cwd=staging, capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise OAuthServerUnavailable(f"npm ci failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # not "another process got there first"
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass
class OAuthServer:
    """A running server: where it is, the responder client Warden revokes with, the agent client, and stop()."""

    issuer: str
    token_endpoint: str
    revocation_endpoint: str
    introspection_endpoint: str
    client_id: str
    client_secret: str = field(repr=False)
    agent_client_id: str
    agent_client_secret: str = field(repr=False)
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    startup_s: float = 0.0
    owned_dir: Path | None = field(default=None, repr=False)  # a temporary log dir start() made: gone on stop()

    def issue_token(self) -> str:
        """A fresh client_credentials access token for the agent client (what an agent would present)."""
        reply = _post(self.token_endpoint, {"grant_type": "client_credentials"},
                      self.agent_client_id, self.agent_client_secret)
        return str(reply["access_token"])

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection with the responder client: `{"active": false}` once revoked."""
        return _post(self.introspection_endpoint, {"token": token}, self.client_id, self.client_secret)

    def matrix_issuer(self, secret_ref: str) -> dict[str, str]:
        """This server as an entry of the matrix's `issuers` (`Issuer.model_validate` it); the responder client's
        secret goes by reference, so put it where `secret_ref` (env:VAR or file:PATH) points."""
        return {"issuer": self.issuer, "revocation_endpoint": self.revocation_endpoint,
                "introspection_endpoint": self.introspection_endpoint, "client_id": self.client_id,
                "client_secret": secret_ref}

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # the server also exits when its stdin closes
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)

    def __enter__(self) -> OAuthServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start(
    *, root: Path | None = None, log_path: Path | None = None, timeout_s: float = 30.0, port: int = 0,
) -> OAuthServer:
    """Install if needed, start the server on 127.0.0.1 (a free port unless `port` is given), and return once
    its discovery document answers. Raises OAuthServerUnavailable with the reason and the end of its log."""
    reason = missing_tools()
    if reason:
        raise OAuthServerUnavailable(reason)
    deps = install(root)
    script = deps / SCRIPT
    tmp = deps / f".{SCRIPT}.{os.getpid()}.{secrets.token_hex(4)}"
    shutil.copyfile(SOURCE / SCRIPT, tmp)
    os.replace(tmp, script)  # the script must sit beside node_modules to import them; replaced whole
    owned_dir = None
    if log_path is None:
        owned_dir = Path(tempfile.mkdtemp(prefix="warden-oauth-"))
        log_path = owned_dir / "oauth-server.log"
    responder_secret, agent_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    config = {
        "clients": [
            {"client_id": RESPONDER_CLIENT_ID, "client_secret": responder_secret},
            {"client_id": AGENT_CLIENT_ID, "client_secret": agent_secret},
        ],
        "responders": [RESPONDER_CLIENT_ID],
    }
    env = {**os.environ, "WARDEN_OAUTH_CONFIG": json.dumps(config), "WARDEN_OAUTH_PORT": str(port),
           "WARDEN_OAUTH_HOST": "127.0.0.1", "NODE_ENV": "production"}
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(["node", str(script)], cwd=deps, env=env, stdin=subprocess.PIPE,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        issuer = _wait_ready(process, log_path, started + timeout_s)
        discovery = _wait_discovery(process, issuer, log_path, started + timeout_s)
    except BaseException:
        process.kill()
        process.wait()
        if owned_dir is not None:  # the error carries the log's end
            shutil.rmtree(owned_dir, ignore_errors=True)
        raise
    return OAuthServer(
        issuer=issuer,
        token_endpoint=discovery["token_endpoint"],
        revocation_endpoint=discovery["revocation_endpoint"],
        introspection_endpoint=discovery["introspection_endpoint"],
        client_id=RESPONDER_CLIENT_ID,
        client_secret=responder_secret,
        agent_client_id=AGENT_CLIENT_ID,
        agent_client_secret=agent_secret,
        log_path=log_path,
        process=process,
        startup_s=time.monotonic() - started,
        owned_dir=owned_dir,
    )


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path, deadline: float) -> str:
    """The issuer URL from the server's ready line, once it printed it."""
    while time.monotonic() < deadline:
        for line in log_path.read_text("utf-8", "replace").splitlines():
            if READY in line:
                try:
                    return str(json.loads(line)[READY])
                except (ValueError, KeyError, TypeError):
                    break  # a half-written line: read again
        if process.poll() is not None:
            raise OAuthServerUnavailable(f"the OAuth server exited ({process.returncode}): {_tail(log_path)}")
        time.sleep(0.02)
    raise OAuthServerUnavailable(f"the OAuth server did not start in time: {_tail(log_path)}")


def _wait_discovery(process: subprocess.Popen[bytes], issuer: str, log_path: Path, deadline: float) -> dict[str, str]:
    """The discovery document, once it answers with every endpoint the revocation needs."""
    url = f"{issuer}/.well-known/openid-configuration"
    last = ""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                doc: dict[str, str] = json.load(reply)
        except (OSError, ValueError) as exc:
            last = str(exc)
            time.sleep(0.02)
            continue
        missing = [k for k in ("token_endpoint", "revocation_endpoint", "introspection_endpoint") if k not in doc]
        if missing:
            raise OAuthServerUnavailable(f"the OAuth server's discovery document lacks {', '.join(missing)}")
        return doc
    raise OAuthServerUnavailable(f"the OAuth server's discovery document did not answer ({last}): {_tail(log_path)}")


def _post(url: str, form: dict[str, str], client_id: str, client_secret: str) -> dict[str, Any]:
    """A form POST with client_secret_basic authentication; the JSON reply (an error reply raises)."""
    basic = base64.b64encode(
        f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}".encode()
    ).decode()
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(form).encode(), method="POST",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        result: dict[str, Any] = json.load(reply)
        return result


def _tail(log_path: Path, n: int = 2000) -> str:
    try:
        return log_path.read_text("utf-8", "replace")[-n:].strip() or "(no output)"
    except OSError:
        return "(no log)"


def main(argv: list[str], out: IO[str] = sys.stdout) -> int:
    """`install`: install the locked dependencies (prints the directory and how long npm ci took);
    `run`: start the server and print its endpoints as JSON until interrupted."""
    command = argv[0] if argv else ""
    try:
        if command == "install":
            cached = installed_dir().is_dir()
            t0 = time.monotonic()
            path = install()
            what = "already installed" if cached else f"npm ci took {time.monotonic() - t0:.1f}s"
            print(f"oidc-provider dependencies in {path} ({what})", file=out)
            return 0
        if command == "run":
            with start() as server:
                print(json.dumps({"issuer": server.issuer, "revocation_endpoint": server.revocation_endpoint,
                                  "introspection_endpoint": server.introspection_endpoint,
                                  "client_id": server.client_id, "client_secret": server.client_secret,
                                  "startup_s": round(server.startup_s, 3)}), file=out, flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    server.process.wait()
            return 0
    except OAuthServerUnavailable as exc:
        print(f"oauth_server: {exc}", file=sys.stderr)
        return 1
    print("usage: oauth_server.py install|run", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
