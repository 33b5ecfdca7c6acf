"""What the responders read from configuration, as a protocol: the runtime's Settings satisfies it structurally."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from pydantic import SecretStr


class ResponderConfig(Protocol):
    """The settings the incident responder and its loops need (see service.runtime.settings); the notifiers' own
    settings are their packages' fragments, composed into the same object."""

    @property
    def effective_database_url(self) -> str: ...

    notify_max_attempts: int
    notify_retry_backoff_s: float
    outbox_poll_s: float
    outbox_lease_s: float
    escalation_poll_s: float
    review_digest_interval: timedelta
    notifiers: str | None  # each notifier reads its own fields (responders/notifiers/<name>/), by attribute
    api_tokens: SecretStr | None
    api_public_url: str | None
