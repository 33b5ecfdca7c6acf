"""What every room of the store shares: the clock, Warden's own actor name, and redaction of untrusted text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Result

from warden.contract.findings import Finding
from warden.contract.redact import redact_text

WARDEN = "warden"  # the actor of every entry Warden makes itself
RELEASE = "release"  # the ledger's playbook and action name of a quarantine release
UNTRUSTED_MAX_CHARS = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE matched (execute() is typed as returning a plain Result; for DML it is a CursorResult)."""
    return cast(CursorResult[Any], result).rowcount


def clean(text: str) -> str:
    """Detectors redact and truncate; anything on the topic is untrusted, so redact again and bound it loosely
    (loosely, so text a detector already truncated keeps its own marker)."""
    return redact_text(text, UNTRUSTED_MAX_CHARS)


def redact_detail(value: Any) -> Any:
    """A timeline detail with every string redacted (keys too), structure kept."""
    if isinstance(value, dict):
        return {clean(str(k)): redact_detail(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_detail(v) for v in value]
    return clean(value) if isinstance(value, str) else value


def evidence_of(finding: Finding) -> dict[str, str]:
    return {clean(k): clean(v) for k, v in finding.evidence.items()}
