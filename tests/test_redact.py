"""Redaction and Slack escaping: credential shapes vanish, control characters become inert."""

from __future__ import annotations

import pytest

from warden.contract.redact import REDACTED, redact_text, redact_value, slack_escape


@pytest.mark.parametrize(
    "secret",
    [
        "Bearer abcdefghijklmnop12345",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLXNpZw",
        "sk-proj-0123456789abcdefghij",
        "sk_live_0123456789abcdef",
        "xoxb-123456789012-abcdefghijkl",
        "ghp_0123456789abcdefghijABCDEFGHIJ",
        "AKIAIOSFODNN7EXAMPLE",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    ],
)
def test_credential_shapes_are_redacted(secret: str) -> None:
    out = redact_text(f"before {secret} after")
    assert secret not in out and REDACTED in out
    assert out.startswith("before ") and out.endswith(" after")


def test_key_value_secrets_keep_the_key_and_lose_the_value() -> None:
    assert redact_text("password=hunter2, user=bob") == f"password={REDACTED}, user=bob"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PASSWORD=hunter2 next", f"PASSWORD={REDACTED} next"),
        ("Token: abc123xyz", f"Token: {REDACTED}"),
        ("API_KEY=k-123456", f"API_KEY={REDACTED}"),
        ("Client-Secret = 's3 cr3t'", f"Client-Secret = {REDACTED}"),
    ],
)
def test_key_value_secrets_are_found_whatever_the_case_of_the_key(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=[x]hunter2 next", f"password={REDACTED} next"),
        ("[a, token=abc123]", f"[a, token={REDACTED}]"),
        ("{k=[token=abc]}", f"{{k=[token={REDACTED}]}}"),
        ("secret: 's3cr3t value'", f"secret: {REDACTED}"),
    ],
)
def test_a_key_value_secret_loses_its_whole_value_and_keeps_outer_brackets(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(redact_text(text)) == expected  # redacting twice changes nothing


def test_values_under_secret_looking_keys_are_dropped_whole() -> None:
    out = redact_value({"cmd": "ls", "api_key": "plainlookingvalue", "nested": {"Authorization": "x"}})
    assert "plainlookingvalue" not in out and out.count(REDACTED) == 2 and "cmd=ls" in out


def test_long_text_is_truncated_with_a_count() -> None:
    out = redact_text("a" * 1000, limit=10)
    assert out == "a" * 10 + "… (+990 chars)"


def test_slack_escape_makes_mentions_and_links_inert() -> None:
    out = slack_escape("<!channel> <@U123> <https://evil|click> & more")
    assert "<" not in out and ">" not in out
    assert out == "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil|click&gt; &amp; more"
