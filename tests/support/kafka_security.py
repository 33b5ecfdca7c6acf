"""The secured test broker's client settings (WARDEN_TEST_KAFKA_SECURITY: the client.json that
tests/support/kafka/secured_material.py writes), so the suite's own clients and its workers connect with its TLS and
SASL."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from service.runtime.kafka_access import KafkaAccess
from service.runtime.settings import Settings

SECURITY_ENV = "WARDEN_TEST_KAFKA_SECURITY"


@cache
def kafka_security() -> dict[str, Any]:
    """The WARDEN_KAFKA_* settings (as Settings field names) of the test broker; empty for a plaintext one."""
    path = os.environ.get(SECURITY_ENV)
    return json.loads(Path(path).read_text()) if path else {}


def kafka_access(bootstrap: str) -> KafkaAccess:
    """How a test client reaches the test broker: plaintext, or as Warden itself would with those settings."""
    security = kafka_security()
    if not security:
        return KafkaAccess(bootstrap)
    return KafkaAccess.from_settings(Settings(kafka_bootstrap=bootstrap, **security))


def security_env() -> dict[str, str]:
    """The same settings as WARDEN_* variables, for a `warden` subprocess."""
    return {f"WARDEN_{k.upper()}": str(v) for k, v in kafka_security().items()}
