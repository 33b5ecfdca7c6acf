"""Runtime settings from WARDEN_* environment variables (pydantic-settings); names are a stable interface."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationInfo, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import warden
from responders.notifiers.registry import notifier_names, settings_models
from streams.ingest import INPUTS, LiveInput
from warden.contract.matrix import Duration
from warden.kit.sealing import Sealer, key_in
from warden.kit.urls import http_url

EXAMPLES = Path(warden.__file__).resolve().parent / "examples"  # package data of the floor: ships in the wheel
BUNDLED_POLICY = EXAMPLES / "policy"


# Each notifier's fields come from its package's settings fragment, through the registry; they are validated
# before the core's, so `notifiers` sees them.
class InputlessSettings(BaseSettings, *settings_models()):  # type: ignore[misc]  # mypy cannot follow dynamic bases
    """Every knob an operator can turn but the live inputs' topics, which `settings_model` adds from `INPUTS`.
    Unset Kafka bootstrap means: start the embedded broker."""

    model_config = SettingsConfigDict(env_prefix="WARDEN_", extra="ignore")
    live_inputs: ClassVar[Mapping[str, LiveInput]] = {}  # the inputs whose `topic_<name>` settings this model has

    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; unset: `warden run` refuses "
                                        "unless WARDEN_EMBEDDED (or --embedded) asks for the embedded broker.")
    embedded: bool = Field(False, description="With WARDEN_KAFKA_BOOTSTRAP unset, start the embedded in-memory "
                           "broker (the demo always does); false: refuse to start without a bootstrap.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client of Warden connects (service/runtime/kafka_access.py).")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism; required with SASL_PLAINTEXT and SASL_SSL.")
    kafka_sasl_username: str | None = Field(None, description="User of PLAIN and SCRAM.")
    kafka_sasl_password: SecretStr | None = Field(None, description="Password of PLAIN and SCRAM (or _FILE).")
    kafka_sasl_password_file: Path | None = Field(None, description="File holding the password (a mounted Secret).")
    kafka_ssl_cafile: Path | None = Field(None, description="PEM CA bundle the brokers' certificates must chain to; "
                                          "unset: the system's trust store.")
    kafka_ssl_certfile: Path | None = Field(None, description="PEM client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM private key of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted client key.")
    kafka_ssl_key_password_file: Path | None = Field(None, description="File holding the client key's password.")
    kafka_oauth_token_url: str | None = Field(None, description="OAUTHBEARER: the OAuth token endpoint "
                                              "(client credentials grant).")
    kafka_oauth_client_id: str | None = Field(None, description="OAUTHBEARER: the client id.")
    kafka_oauth_client_secret: SecretStr | None = Field(None, description="OAUTHBEARER: the client secret.")
    kafka_oauth_client_secret_file: Path | None = Field(None, description="File holding the OAuth client secret.")
    kafka_oauth_scope: str | None = Field(None, description="OAUTHBEARER: scope requested with the token.")
    policy: Path = Field(BUNDLED_POLICY, description="Matrix file or folder.")
    policy_reload_s: float = Field(2.0, gt=0, description="How often the worker checks the policy files for changes.")
    data_dir: Path = Field(Path("./data"), description="Where the embedded defaults keep files (SQLite, ...).")
    web_bind: str = Field("127.0.0.1:6066", description="host:port of the worker's HTTP server.")
    topic_findings: str = "warden.findings"
    topic_dlq: str = "warden.activity.dlq"
    topic_control: str = Field("warden.control", description="Compacted; quarantine state per agent, for gateways.")
    topic_revocations: str = Field("warden.revocations", description="Compacted; revoked credential ids.")
    topic_approval_requests: str = Field("warden.approval.requests", description="Gateways' approval requests, "
                                         "keyed by agent id (docs/approvals.md).")
    topic_approval_decisions: str = Field("warden.approval.decisions", description="Warden's answers, keyed by "
                                          "request id; the latest per id wins.")
    topic_approval_dlq: str = Field("warden.approval.requests.dlq", description="Malformed approval requests, with "
                                    "the reason and correlation id as headers.")
    topic_audit: str | None = Field(None, description="Unset: no export. Else findings (OCSF Detection Finding) "
                                    "and timeline entries as JSON on this topic, e.g. warden.audit.")
    otlp_encoding: Literal["auto", "otlp_proto", "otlp_json"] = Field(
        "auto", description="The exporter's traces.encoding and logs.encoding; auto tells JSON from protobuf by the "
        "first byte.")
    otlp_wait_s: float = Field(5.0, gt=0, description="How long a span waits for an ancestor span naming its "
                               "agent before it is judged as an unowned agent's.")
    otlp_max_spans: int = Field(100_000, ge=1, description="Spans the agent resolver remembers over all traces; "
                                "past it the least recently active trace is released unresolved.")
    otlp_export_endpoint: str | None = Field(
        None, description="Experimental. Unset: off. Else an OTLP/HTTP endpoint (a Collector's base URL, e.g. "
        "http://otel-collector:4318) that receives each finding and containment step as a log event on the agent's "
        "trace (gen_ai.evaluation.result; docs/otel.md).")
    otlp_export_timeout_s: float = Field(10.0, gt=0, description="Timeout of one OTLP export request.")
    topic_partitions: int = Field(4, ge=1)
    app_id: str = Field("warden", description="Kafka consumer group / faust app id.")
    kafka_session_timeout_s: float = Field(30.0, description="Consumer group session timeout (tests use 6).")
    kafka_heartbeat_interval_s: float = Field(3.0, description="Consumer group heartbeat interval (tests use 1).")
    kafka_rebalance_timeout_s: float = Field(30.0, description="Consumer group rebalance timeout (tests use 3).")
    kafka_group_instance_id: str | None = Field(
        None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$",
        description="Static group membership (KIP-345): a name unique to this worker and the same across its "
        "restarts (a StatefulSet pod's name). A worker killed and started again takes its partitions back at once "
        "instead of after the session timeout; a worker stopped for good keeps them until the session timeout.")
    max_message_bytes: int = Field(1_048_576, ge=1024, description="Larger activity messages are dead-lettered.")
    dlq_max_bytes: int = Field(8 * 1_048_576, ge=1024, description="Larger dead letters keep only their head.")
    database_url: str | None = Field(None, description="SQLAlchemy async URL; unset means SQLite in data_dir.")
    notify_max_attempts: int = Field(5, ge=1, description="Deliveries tried before a notification is dead-lettered.")
    notify_retry_backoff_s: float = Field(5.0, ge=0, description="First retry delay; doubles on each attempt.")
    outbox_poll_s: float = Field(2.0, gt=0, description="How often the outbox looks for due notifications.")
    outbox_lease_s: float = Field(
        120.0, gt=0, description="A claimed notification not yet being sent may be taken by another worker after this."
    )
    escalation_poll_s: float = Field(5.0, gt=0, description="How often unacknowledged incidents are checked.")
    review_digest_interval: Duration = Field(
        timedelta(hours=1), description="How often each responder gets one digest of its review-tier incidents "
        "(30s, 15m, 1h, 1d or seconds; at least 1s). Boundaries are multiples of it since the epoch.")
    seal_key: SecretStr | None = Field(None, description="Fernet key that seals kept secrets (tokens awaiting "
                                       "approval); unset: generated in data_dir/seal.key. Share it across workers.")
    containment_poll_s: float = Field(1.0, gt=0, description="How often the playbook engine looks for due steps.")
    containment_timeout_s: float = Field(10.0, gt=0, description="Timeout of one containment action attempt.")
    containment_max_attempts: int = Field(5, ge=1, description="Attempts of a failing step before it escalates.")
    containment_retry_backoff_s: float = Field(2.0, ge=0, description="First retry delay; doubles on each attempt.")
    notifiers: str | None = Field(None, description="Comma-separated notifiers every incident goes to (the "
                                  "registry's names); unset: the default notifiers whose settings are set, else "
                                  "console.")
    api_public_url: str | None = Field(None, description="Base URL of the incident API as people reach it (an "
                                       "ingress); digests then link to their group's incident list.")

    log_format: Literal["json", "text"] = Field("json", description="Log lines as JSON objects or plain text.")
    lag_poll_s: float = Field(15.0, gt=0, description="How often consumer lag is read from the broker.")
    api_tokens: SecretStr | None = Field(None, description="owner:token[,owner:token]: bearer tokens of the "
                                         "incident API, each acting as its owner; unset: the API is off.")

    gateway_tokens: SecretStr | None = Field(None, description="gateway:token[,gateway:token]: bearer tokens of the "
                                             "approval API (/v1/approvals), each naming its gateway; unset: the "
                                             "HTTP transport is off (Kafka still answers).")
    approvals_poll_s: float = Field(1.0, gt=0, description="How often approval requests are checked for routing, "
                                    "escalation, expiry and publishing.")

    @field_validator("seal_key")
    @classmethod
    def _seal_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            Sealer(v.get_secret_value())  # raises "must be 32 url-safe base64-encoded bytes", never the key
        return v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        from service.runtime.database_url import check_database_url  # lazy: SQLAlchemy costs `warden schema` 0.2 s

        return check_database_url(v) if v is not None else v

    @field_validator("kafka_sasl_password_file", "kafka_ssl_key_password_file", "kafka_oauth_client_secret_file",
                     "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        if v is not None and not (v.is_file() and os.access(v, os.R_OK)):
            raise ValueError(f"{v} is not a readable file")
        return v

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        from service.runtime.kafka_access import check_security  # lazy: aiokafka is only needed by workers

        check_security(self)
        return self

    @field_validator("api_tokens", "gateway_tokens")
    @classmethod
    def _api_tokens(cls, v: SecretStr | None) -> SecretStr | None:
        from responders.api import parse_tokens  # lazy, like the notifiers' registry below

        if v is not None:
            parse_tokens(v.get_secret_value())  # raises with the reason, never the token
        return v

    @field_validator("review_digest_interval", mode="before")
    @classmethod
    def _seconds(cls, v: object) -> object:
        return float(v) if isinstance(v, str) and v.strip().replace(".", "", 1).isdigit() else v  # "900": seconds

    @field_validator("review_digest_interval")
    @classmethod
    def _digest_interval(cls, v: timedelta) -> timedelta:
        if v < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return v

    @field_validator("otlp_export_endpoint")
    @classmethod
    def _otlp_endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        url = http_url(v, example="http://otel-collector:4318")
        if url.query_string or url.fragment:
            raise ValueError("must have no query or fragment")
        return v

    @field_validator("web_bind")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{v!r} is not host:port")
        return v

    @field_validator("notifiers")
    @classmethod
    def _known_notifiers(cls, v: str | None, info: ValidationInfo) -> str | None:
        return ",".join(notifier_names(v, info.data)) if v else v

    def input_topics(self) -> dict[str, str]:
        """Each live input's topic (WARDEN_TOPIC_<NAME>), by its name in the registry."""
        return {name: self.input_topic(name) for name in self.live_inputs}

    def input_topic(self, name: str) -> str:
        """The topic of the live input `name` (e.g. `streams.ingest.ACTIVITY`)."""
        topic: str = getattr(self, f"topic_{name}")
        return topic

    @property
    def web_host(self) -> str:
        return self.web_bind.rpartition(":")[0]

    @property
    def web_port(self) -> int:
        return int(self.web_bind.rpartition(":")[2])

    def sealer(self) -> Sealer:
        """One key for every worker when set; the embedded default keeps its own in the data dir."""
        key = self.seal_key.get_secret_value() if self.seal_key else key_in(self.data_dir)
        return Sealer(key)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'warden.db').resolve()}"


def settings_model(inputs: Mapping[str, LiveInput]) -> type[InputlessSettings]:
    """The settings with one topic setting, `WARDEN_TOPIC_<NAME>`, per live input of `inputs`."""
    fields: dict[str, Any] = {f"topic_{name}": (str, Field(live.topic, description=live.about))
                              for name, live in inputs.items()}
    model = create_model("Settings", __base__=InputlessSettings, __module__=__name__,
                         __doc__=InputlessSettings.__doc__, **fields)
    model.live_inputs = dict(inputs)
    return model


if TYPE_CHECKING:
    Settings = InputlessSettings
else:
    Settings = settings_model(INPUTS)
