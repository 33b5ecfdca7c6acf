"""How every Kafka client Warden makes connects: the bootstrap plus TLS and SASL, built once from the settings, so
no consumer, producer, admin client or faust app can be made without the cluster's security (and no secret is
ever logged: the password and token live only in this object, hidden from its repr)."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from service.runtime.settings import Settings

SASL = {"SASL_PLAINTEXT", "SASL_SSL"}
TLS = {"SSL", "SASL_SSL"}


def _secret(value: Any, path: Any) -> str | None:
    """A secret given inline (SecretStr) or as a file (a mounted Secret; surrounding whitespace stripped)."""
    if path is not None:
        with open(path) as f:
            return f.read().strip()
    return value.get_secret_value() if value is not None else None


def check_security(s: Settings) -> None:
    """The Kafka security settings make sense together; ValueError naming the variables otherwise."""
    protocol, mechanism = s.kafka_security_protocol, s.kafka_sasl_mechanism
    pairs = [("KAFKA_SASL_PASSWORD", s.kafka_sasl_password, s.kafka_sasl_password_file),
             ("KAFKA_SSL_KEY_PASSWORD", s.kafka_ssl_key_password, s.kafka_ssl_key_password_file),
             ("KAFKA_OAUTH_CLIENT_SECRET", s.kafka_oauth_client_secret, s.kafka_oauth_client_secret_file)]
    for name, inline, path in pairs:
        if inline is not None and path is not None:
            raise ValueError(f"WARDEN_{name} and WARDEN_{name}_FILE are both set: set one")
    if protocol in SASL and mechanism is None:
        raise ValueError(f"WARDEN_KAFKA_SASL_MECHANISM is required with WARDEN_KAFKA_SECURITY_PROTOCOL={protocol}")
    if protocol not in SASL and mechanism is not None:
        raise ValueError(f"WARDEN_KAFKA_SASL_MECHANISM={mechanism} needs WARDEN_KAFKA_SECURITY_PROTOCOL SASL_SSL "
                         f"or SASL_PLAINTEXT (it is {protocol})")
    if protocol not in TLS:
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            if getattr(s, name) is not None:
                raise ValueError(f"WARDEN_{name.upper()} needs WARDEN_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL "
                                 f"(it is {protocol})")
    if mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}:
        if not s.kafka_sasl_username:
            raise ValueError(f"WARDEN_KAFKA_SASL_USERNAME is required with WARDEN_KAFKA_SASL_MECHANISM={mechanism}")
        if s.kafka_sasl_password is None and s.kafka_sasl_password_file is None:
            raise ValueError("WARDEN_KAFKA_SASL_PASSWORD or WARDEN_KAFKA_SASL_PASSWORD_FILE is required with "
                             f"WARDEN_KAFKA_SASL_MECHANISM={mechanism}")
    if mechanism == "OAUTHBEARER":
        for name in ("kafka_oauth_token_url", "kafka_oauth_client_id"):
            if not getattr(s, name):
                raise ValueError(f"WARDEN_{name.upper()} is required with WARDEN_KAFKA_SASL_MECHANISM=OAUTHBEARER")
        if s.kafka_oauth_client_secret is None and s.kafka_oauth_client_secret_file is None:
            raise ValueError("WARDEN_KAFKA_OAUTH_CLIENT_SECRET or WARDEN_KAFKA_OAUTH_CLIENT_SECRET_FILE is required "
                             "with WARDEN_KAFKA_SASL_MECHANISM=OAUTHBEARER")
        if not str(s.kafka_oauth_token_url).startswith(("https://", "http://")):
            raise ValueError("WARDEN_KAFKA_OAUTH_TOKEN_URL must be an http(s):// URL")
    if (s.kafka_ssl_certfile is None) != (s.kafka_ssl_keyfile is None):
        raise ValueError("WARDEN_KAFKA_SSL_CERTFILE and WARDEN_KAFKA_SSL_KEYFILE go together: set both or neither")
    if protocol in TLS:
        _ssl_context(s)  # a CA bundle or key that does not load fails here, naming the variable


def _ssl_context(s: Settings) -> ssl.SSLContext:
    """TLS that verifies the brokers' certificates and host names (the system's trust store unless a CA bundle)."""
    try:
        context = ssl.create_default_context(cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"WARDEN_KAFKA_SSL_CAFILE: {s.kafka_ssl_cafile} is not a PEM CA bundle "
                         f"({getattr(exc, 'reason', None) or exc})") from None
    if s.kafka_ssl_certfile is not None:
        password = _secret(s.kafka_ssl_key_password, s.kafka_ssl_key_password_file)
        try:
            context.load_cert_chain(str(s.kafka_ssl_certfile), str(s.kafka_ssl_keyfile), password)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"WARDEN_KAFKA_SSL_CERTFILE/WARDEN_KAFKA_SSL_KEYFILE: the client certificate and key "
                             f"do not load ({getattr(exc, 'reason', None) or type(exc).__name__})") from None
    return context


class ClientCredentialsToken(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka ships no type hints
    """OAUTHBEARER: an access token from the token endpoint (client credentials grant), reused until a minute
    before it expires, fetched again after. The secret and the token are never logged."""

    def __init__(self, url: str, client_id: str, client_secret: str, scope: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self._url, self._client_id, self._secret, self._scope = url, client_id, client_secret, scope
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<ClientCredentialsToken {self._url} client_id={self._client_id}>"

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                self._token, lifetime = await self._fetch()
                self._expires = time.monotonic() + max(lifetime - 60.0, lifetime / 2)
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"} | ({"scope": self._scope} if self._scope else {})
        # RFC 6749 2.3.1: each part form-encoded, then HTTP Basic (as the revoke_token action does)
        pair = f"{quote(self._client_id, safe='')}:{quote(self._secret, safe='')}".encode()
        headers = {"Authorization": f"Basic {base64.b64encode(pair).decode()}", "Accept": "application/json"}
        async with aiohttp.ClientSession(timeout=self._timeout) as http, \
                http.post(self._url, data=form, headers=headers) as response:
            if response.status != 200:
                raise OAuthTokenError(f"the token endpoint {self._url} answered {response.status} for client "
                                      f"{self._client_id} (WARDEN_KAFKA_OAUTH_CLIENT_ID/_SECRET)")
            body = await response.json(content_type=None)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise OAuthTokenError(f"the token endpoint {self._url} answered without an access_token")
        return token, float(body.get("expires_in") or 300)


class OAuthTokenError(RuntimeError):
    """The OAuth token endpoint refused the client or answered nonsense (says which, never the secret)."""


@dataclass(frozen=True)
class KafkaAccess:
    """The bootstrap and security every Kafka client of a Warden process shares."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    token_provider: AbstractTokenProvider | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, s: Settings, bootstrap: str | None = None) -> KafkaAccess:
        """From the settings; `bootstrap` overrides theirs (the embedded broker's address, always plaintext)."""
        if bootstrap is not None and not s.kafka_bootstrap:
            return cls(bootstrap)
        address = bootstrap or s.kafka_bootstrap or ""
        protocol, mechanism = s.kafka_security_protocol, s.kafka_sasl_mechanism
        provider = None
        if mechanism == "OAUTHBEARER":
            provider = ClientCredentialsToken(
                str(s.kafka_oauth_token_url), str(s.kafka_oauth_client_id),
                _secret(s.kafka_oauth_client_secret, s.kafka_oauth_client_secret_file) or "", s.kafka_oauth_scope)
        return cls(
            address, protocol,
            ssl_context=_ssl_context(s) if protocol in TLS else None,
            sasl_mechanism=mechanism if protocol in SASL else None,
            sasl_username=s.kafka_sasl_username,
            sasl_password=_secret(s.kafka_sasl_password, s.kafka_sasl_password_file),
            token_provider=provider,
        )

    def client_options(self) -> dict[str, Any]:
        """aiokafka's connection keywords (consumers, producers and the admin client take the same ones)."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                options["sasl_oauth_token_provider"] = self.token_provider
            else:
                options["sasl_plain_username"] = self.sasl_username
                options["sasl_plain_password"] = self.sasl_password
        return options

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.client_options(), **options)

    def producer(self, **options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.client_options(), **options)

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.client_options(), **options)

    def faust_credentials(self) -> CredentialsT | None:
        """The same security for the faust app (`broker_credentials`), which makes its own consumer and producer."""
        from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials

        if self.security_protocol == "SSL":
            return SSLCredentials(self.ssl_context)
        if self.sasl_mechanism == "OAUTHBEARER":
            assert self.token_provider is not None
            return OAuthCredentials(oauth_cb=self.token_provider, ssl_context=self.ssl_context)
        if self.sasl_mechanism is not None:
            return SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                   ssl_context=self.ssl_context, mechanism=self.sasl_mechanism)
        return None


def access(kafka: KafkaAccess | str) -> KafkaAccess:
    """A KafkaAccess as is; a bare "host:port" is a plaintext one (tests and the embedded broker)."""
    return kafka if isinstance(kafka, KafkaAccess) else KafkaAccess(kafka)


class _Reasons(logging.Handler):
    """Keeps what aiokafka logs while it fails to connect: its exception says only "Unable to bootstrap"."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def connect_reasons() -> Iterator[list[str]]:
    """aiokafka's own connection errors, silenced on the console and collected for one line of explanation."""
    logger = logging.getLogger("aiokafka")
    handler, level, propagate = _Reasons(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def explain(lines: list[str]) -> str:
    """The last connection error aiokafka reported, with the setting to look at."""
    reasons = [line for line in lines if "Unable connect" in line or "Authentication" in line or "SSL" in line]
    if not reasons:
        return ""
    reason = reasons[-1].split('": ', 1)[-1]
    if "SaslAuthenticationFailed" in reason or "Authentication failed" in reason:
        hint = "check WARDEN_KAFKA_SASL_USERNAME and WARDEN_KAFKA_SASL_PASSWORD(_FILE)"
    elif "CERTIFICATE_VERIFY_FAILED" in reason:
        hint = "the broker's certificate is not trusted: check WARDEN_KAFKA_SSL_CAFILE"
    elif "WRONG_VERSION_NUMBER" in reason or "closed" in reason:
        hint = "check WARDEN_KAFKA_SECURITY_PROTOCOL against the listener"
    else:
        hint = ""
    return f"{reason}{'; ' + hint if hint else ''}"
