"""Keep secrets out of everything Warden emits (each notifier then makes the text inert in its own markup).

Redaction goes by structure first, then by shape: JSON objects (also JSON inside strings, at any depth) are walked
and the value under a secret-ish key is dropped whole; header lines (`Authorization:`, `Cookie:`, `X-Api-Key:` ...)
lose their value to the end of the line; `key=value`, `"key": "value"` and `'key': 'value'` pairs under a
secret-ish key lose the value; known token formats and long high-entropy tokens are replaced wherever they stand.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

REDACTED = "[REDACTED]"
MAX_EVIDENCE_CHARS = 500
MAX_JSON_CHARS = 200_000  # longer text is not parsed as JSON (its pairs and tokens are still redacted by shape)

# Key names whose value is a secret, matched on the lower-cased key with `-`, `_`, `.` and spaces removed:
# anywhere in the key for these...
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "privatekey",
                 "signingkey", "encryptionkey", "authorization", "cookie", "credential", "signature", "bearer")
# ...only as the key's end for these shorter, more ambiguous ones (`x_auth`, `user_session`, not `author`)...
_SECRET_ENDINGS = ("pwd", "pass", "auth", "session", "jsessionid", "phpsessid")
# ...and only as the whole key for these.
_SECRET_KEYS = frozenset({"sid", "pin", "otp", "mfa", "totp"})

# The value of a secret-ish pair: a (possibly escaped) quoted string, or a bare run up to a separator.
_VALUE = r"""(?:\\+"(?:[^"\\]|\\(?!"))*\\+"|"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&}]+)"""
_KEY = r"[A-Za-z0-9_.-]*?(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|" \
       r"private[_-]?key|authorization|auth|cookie|credential|session|signature)[A-Za-z0-9_.-]*"
# `key=value`, `key: value`, `"key": "value"`, `'key': 'value'`, `\"key\": \"value\"` (JSON inside JSON text).
_PAIR = re.compile(r"(?i)(?<![A-Za-z0-9])(" + _KEY + r")((?:\\*[\"'])?\s*[=:]\s*)(?!\[REDACTED\])(" + _VALUE + ")")
# Header lines: the whole value to the end of the line (or of a quoted -H argument) is secret. A line may also end
# in an escaped `\n` (a header block inside a JSON string or a Python repr).
_HEADER = re.compile(
    r"(?im)(?:(?<![A-Za-z0-9-])|(?<=\\[nr]))((?:proxy-)?authorization|cookie|set-cookie|"
    r"x-[a-z0-9-]*(?:key|token|auth|secret)[a-z0-9-]*)(\s*:[ \t]*+)(?!\[REDACTED\])((?:[^\r\n\"'\\]|\\(?![nr]))+)"
)
_TOKENS = [
    re.compile(r"(?i)\b(?:bearer|basic|digest)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),  # JWT
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # OpenAI / Anthropic style keys
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"),  # Stripe
    re.compile(r"\bxox[a-z]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]{10,}"),  # Slack app-level tokens
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),  # GitHub fine-grained tokens
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),  # GitLab
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API keys
    re.compile(r"-----BEGIN [A-Z0-9 ]*-----[\s\S]*?(?:-----END [A-Z0-9 ]*-----|$)"),  # PEM blocks, keys or not
    re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@"),  # credentials in a URL: user:pass@host
]
# A long run of token characters: a secret when its characters are varied enough (see _high_entropy).
_NAME = re.compile(r"[a-z][a-z0-9_-]*")  # a setting's or a field's name, never a token's mixed case
_CANDIDATE = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/=_-]{20,}(?![A-Za-z0-9+/=_-])")
ENTROPY_BITS = 4.0  # Shannon bits per character; detect-secrets uses 4.5 for base64 over quoted strings


def redact_text(text: str, limit: int = MAX_EVIDENCE_CHARS) -> str:
    """Replace secrets in free text (structure first, then shapes) and truncate; safe to log, store and show."""
    text = _redact_structure(text)
    if len(text) > limit:
        text = text[:limit] + f"… (+{len(text) - limit} chars)"
    return text


def redact_value(value: Any, limit: int = MAX_EVIDENCE_CHARS) -> str:
    """Render any JSON-like value as redacted text; values under secret-looking keys are dropped whole."""
    return redact_text(_render(redact_tree(value)), limit)


def redact_tree(value: Any) -> Any:
    """The same JSON-like value with every secret replaced: secret-ish keys lose their value, strings are redacted
    (JSON inside them walked too). Iterative over containers, so a deep value cannot exhaust the stack."""
    root: list[Any] = [value]
    stack: list[tuple[list[Any] | dict[Any, Any], Any]] = [(root, 0)]
    while stack:
        parent, key = stack.pop()
        v = parent[key]
        if isinstance(v, dict):
            out: dict[Any, Any] = {}
            for k, item in v.items():
                out[k] = REDACTED if _secret_key(str(k)) and item not in (None, "") else item
                if out[k] is item:
                    stack.append((out, k))
            parent[key] = out
        elif isinstance(v, list | tuple):
            items = list(v)
            parent[key] = items
            stack.extend((items, i) for i in range(len(items)))
        elif isinstance(v, str):
            parent[key] = _redact_structure(v)
    return root[0]


def _secret_key(key: str) -> bool:
    """A key whose value is secret. An id is not (`session_id`, `credential_id`, `token_id`: the contract's own
    non-secret fields), except session cookies named like ids (`JSESSIONID`, `PHPSESSID`)."""
    k = re.sub(r"[\s_.-]", "", key.lower())
    if k.endswith("id") and not k.endswith(("jsessionid", "phpsessid")):
        return False
    return k in _SECRET_KEYS or k.endswith(_SECRET_ENDINGS) or any(w in k for w in _SECRET_WORDS)


def _redact_structure(text: str) -> str:
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= MAX_JSON_CHARS:
        try:
            parsed = json.loads(stripped)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict | list):
            return json.dumps(redact_tree(parsed), ensure_ascii=False)
    return _redact_shapes(text)


def _redact_shapes(text: str) -> str:
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    for pattern in _TOKENS:  # before pairs: `Authorization: Basic xyz` loses `Basic xyz`, not only `Basic`
        text = pattern.sub(_redact_token, text)
    text = _PAIR.sub(_redact_pair, text)
    return _CANDIDATE.sub(lambda m: _redact_candidate(m.group()), text)


def _redact_candidate(token: str) -> str:
    """A run of token characters (at least 20) judged by its entropy; but `name=value` with a lowercase
    name (base64 pads only at the end, so an `=` inside joins a name to a value, as in `frameworks=OWASP-ASI02`)
    keeps its name and has the value judged as a token standing alone would be."""
    name, sep, value = token.partition("=")
    if sep and value.strip("=") and _NAME.fullmatch(name):
        return f"{name}={_redact_candidate(value)}"
    return REDACTED if _high_entropy(token) else token


def _redact_pair(m: re.Match[str]) -> str:
    """Drop the whole value, brackets included, but give back closing brackets that belong to an outer list."""
    if not _secret_key(m.group(1)):
        return m.group()
    value, tail = m.group(3), ""
    while value.endswith("]") and value.count("]") > value.count("["):
        value, tail = value[:-1], "]" + tail
    return f"{m.group(1)}{m.group(2)}{REDACTED}{tail}"


def _redact_token(m: re.Match[str]) -> str:
    if m.lastindex:  # only the password of a URL's user:password@
        return m.group()[: m.start(1) - m.start()] + REDACTED + "@"
    return REDACTED


def _high_entropy(token: str) -> bool:
    """A random-looking token: upper and lower case letters and digits, and varied characters. Hex (ids, hashes,
    trace ids) and words joined by `-`/`_` are kept."""
    if not (any(c.isupper() for c in token) and any(c.islower() for c in token) and any(c.isdigit() for c in token)):
        return False
    n = len(token)
    bits = -sum(c / n * math.log2(c / n) for c in Counter(token).values())
    return bits >= min(ENTROPY_BITS, math.log2(n) - 0.6)


def _render(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value)
