"""A worker shared by the tests of one module (group join costs seconds), and a responder that records."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.runtime.settings import BUNDLED_POLICY, Settings
from warden.contract.findings import Finding


def isolated_settings(kafka_bootstrap: str, tmp: Path, **overrides: Any) -> Settings:
    """As conftest's `worker_settings`, for a module-scoped worker: own topics, group id and data dir."""
    suffix = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "policy": BUNDLED_POLICY,
        "data_dir": tmp / "data",
        "web_bind": "127.0.0.1:0",
        "app_id": f"warden-test-{suffix}",
        "topic_activity": f"t{suffix}.activity",
        "topic_findings": f"t{suffix}.findings",
        "topic_dlq": f"t{suffix}.dlq",
        "topic_control": f"t{suffix}.control",
        "topic_revocations": f"t{suffix}.revocations",
        "topic_approval_requests": f"t{suffix}.approval.requests",
        "topic_approval_decisions": f"t{suffix}.approval.decisions",
        "topic_approval_dlq": f"t{suffix}.approval.dlq",
        "topic_otlp": f"t{suffix}.otlp",
        "topic_otlp_logs": f"t{suffix}.otlp_logs",
        "kafka_session_timeout_s": 6,
        "kafka_heartbeat_interval_s": 1,
        "kafka_rebalance_timeout_s": 3,
    }
    return Settings(**(fields | overrides))


class RecordingResponder:
    """Keeps every finding it is handed, in order."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    async def start(self) -> None:
        return None

    async def handle(self, finding: Finding) -> None:
        self.findings.append(finding)

    async def stop(self) -> None:
        return None


async def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
