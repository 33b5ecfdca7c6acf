"""Keep secrets out of everything Warden emits, and make untrusted agent text inert in Slack."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"
MAX_EVIDENCE_CHARS = 500

# Well-known credential shapes. Order matters only for readability; each is replaced whole.
_SECRET_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),  # JWT
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # OpenAI-style keys
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"),  # Stripe
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    re.compile(
        r"(?i)\b(password|passwd|secret|token|api[_-]?key|access[_-]?key|client[_-]?secret)"
        r"(\s*[=:]\s*)(?!\[REDACTED\](?:[\s,;&}\]]|$))(\"[^\"]*\"|'[^']*'|[^\s,;&}]+)"  # already redacted: leave it
    ),
]
_KEY_VALUE = _SECRET_PATTERNS[-1]
_SECRET_KEYS = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|authorization|credential|private[_-]?key)")


def redact_text(text: str, limit: int = MAX_EVIDENCE_CHARS) -> str:
    """Replace credential-shaped substrings and truncate; the result is safe to log, store and show."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_redact_key_value if pattern is _KEY_VALUE else REDACTED, text)
    if len(text) > limit:
        text = text[:limit] + f"… (+{len(text) - limit} chars)"
    return text


def _redact_key_value(m: re.Match[str]) -> str:
    """Drop the whole value, brackets included, but give back closing brackets that belong to an outer list."""
    value, tail = m.group(3), ""
    while value.endswith("]") and value.count("]") > value.count("["):
        value, tail = value[:-1], "]" + tail
    return f"{m.group(1)}{m.group(2)}{REDACTED}{tail}"


def redact_value(value: Any, limit: int = MAX_EVIDENCE_CHARS) -> str:
    """Render any JSON-like value as redacted text; values under secret-looking keys are dropped whole."""
    return redact_text(_render(value), limit)


def _render(value: Any) -> str:
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            shown = REDACTED if _SECRET_KEYS.search(str(k)) else _render(v)
            parts.append(f"{k}={shown}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value)


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control (`&`, `<`, `>`), per Slack's docs."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
