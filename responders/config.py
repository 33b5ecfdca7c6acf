"""What the responders read from configuration, as a protocol: the runtime's Settings satisfies it structurally."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from pydantic import SecretStr


class ResponderConfig(Protocol):
    """The settings the incident responder, its notifiers and its loops need (see service.runtime.settings)."""

    @property
    def effective_database_url(self) -> str: ...

    notify_max_attempts: int
    notify_retry_backoff_s: float
    outbox_poll_s: float
    outbox_lease_s: float
    escalation_poll_s: float
    review_digest_interval: timedelta
    notifiers: str | None
    slack_token: SecretStr | None
    slack_api_url: str | None
    slack_signing_secret: SecretStr | None
    slack_timeout_s: float
    slack_channel_rate: float
    slack_channel_burst: int
    api_tokens: SecretStr | None
    api_public_url: str | None
