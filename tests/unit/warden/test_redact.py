"""Redaction and Slack escaping: credential shapes vanish, control characters become inert."""

from __future__ import annotations

import json

import pytest

from warden.contract.redact import MAX_JSON_CHARS, REDACTED, redact_text, redact_tree, redact_value


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
        ("password=[abc] next", f"password={REDACTED} next"),  # balanced brackets are all the value's
        ("secret=x]y next", f"secret={REDACTED} next"),  # a bracket inside the value is not a closing one
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


def test_text_exactly_at_the_limit_is_kept_whole() -> None:
    assert redact_text("a" * 10, limit=10) == "a" * 10


# -- structured secrets (issue 10) ------------------------------------------------------------------------------

S = "Zq8vN3pLx7RtK2mW"  # a distinct, plain-looking secret value: only structure can find it


@pytest.mark.parametrize("text", [
    f'{{"api_key": "{S}"}}',  # a JSON document inside a string argument
    f'{{"password": "{S}", "user": "bob"}}',
    f'{{"outer": "{{\\"password\\": \\"{S}\\"}}"}}',  # JSON inside a JSON string inside a string
    f'run with {{"token": "{S}"}} now',  # JSON inside free text
    f"{{'pwd': '{S}'}}",  # Python's repr of a dict (what a template renders)
    f"passphrase={S}",
    f"PrivateKey: {S}",
    f'{{"auth": "{S}"}}',
    f'{{"Cookie": "{S}"}}',
    f'{{"session": "{S}"}}',
    f'{{"private_key": "{S}"}}',
    f'{{"nested": [{{"x": {{"client_secret": "{S}"}}}}]}}',
    f"Authorization: Basic {S}",
    f"curl -H 'Authorization: Digest {S} realm' https://x",
    f"GET / HTTP/1.1\nHost: x\nCookie: session={S}; theme=dark\n",
    f"Set-Cookie: id={S}; HttpOnly",
    f"X-Api-Key: {S}",
    f"x-auth-token:{S}",
    f"https://bob:{S}@db.example/x",
    str({"request": f"GET /\nAuthorization: Basic {S}\nAccept: */*"}),  # a header block in a repr (templates)
    json.dumps({"request": f"GET /\nCookie: a=1; sid={S}\n"})[:-1],  # ...and in JSON text cut short
])
def test_structured_secrets_are_redacted(text: str) -> None:
    out = redact_text(text, limit=10_000)
    assert S not in out and REDACTED in out, out


@pytest.mark.parametrize("token", [
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLXNpZw",
    "xoxp-1234-5678-abcdefghijkl", "xapp-1-A0123-456789-abcdef",
    "sk-ant-api03-abcdefghijklmnop", "ghs_0123456789abcdefghijABCD", "github_pat_11ABCDEFG0123456789_abcdefghij",
    "ASIAIOSFODNN7EXAMPLE", "AIzaSyA-0123456789abcdefghijklmnopqrstu",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    "q7Xk2LmP9wR4tZ8vB3nJ6hC1",  # high entropy, no known shape
    "aB3dE5gH7jK9mN1aB3dE",  # 20 characters, 15 distinct: 3.82 bits, over the short-token bar log2(20) - 0.6
    "aaBB33ddEE55ggHH77jjKK99mmNN11pp",  # exactly 4.0 bits per character: at the bar is over it
])
def test_known_formats_and_high_entropy_tokens_are_redacted(token: str) -> None:
    out = redact_text(f"see {token} here", limit=10_000)
    assert token not in out and REDACTED in out


@pytest.mark.parametrize("text", [
    "session_id=sess-d credential_id=kid-22 token_id=t1",  # the contract's ids are not secrets
    "trace 4bf92f3577b34da6a3ce929d0e0e4736, sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "vault://billing/stripe-restricted-key", "the author wrote internationalization-guidelines-2026",
    "shell.exec with {\"cmd\": \"id\", \"cwd\": \"/srv\"}",
    "pod billing-agent-7d9f8b6c5-x2k4p restarted",  # varied, but no upper case: names and slugs are kept
    "see the_quick_brown_fox_jumps_over_lazy_dogs",  # varied, but no digit
    "build Version2Version2Version2",  # all three classes, but repetitive: low entropy
])
def test_ordinary_text_and_ids_are_kept(text: str) -> None:
    assert redact_text(text, limit=10_000) == text


def test_only_the_password_of_credentials_in_a_url_is_redacted() -> None:
    text = "clone https://bob:hunter2pass@git.example.com/repo.git now"
    assert redact_text(text) == f"clone https://bob:{REDACTED}@git.example.com/repo.git now"


def test_a_json_document_up_to_the_parse_limit_is_redacted_by_its_keys() -> None:
    """`pin` is a secret only as a whole JSON key (no key=value shape names it): structure finds it up to
    MAX_JSON_CHARS; a longer document is redacted by shape alone and kept as written."""
    head = '{"pin":"1234","pad":"'
    at_limit = head + "x" * (MAX_JSON_CHARS - len(head) - 2) + '"}'
    assert len(at_limit) == MAX_JSON_CHARS
    assert json.loads(redact_text(at_limit, limit=MAX_JSON_CHARS * 2))["pin"] == REDACTED
    over = at_limit[:-2] + 'x"}'
    assert redact_text(over, limit=MAX_JSON_CHARS * 2) == over  # not parsed (so not re-serialised either)


def test_a_redacted_json_document_keeps_non_ascii_text_as_written() -> None:
    assert redact_text('{"name": "café", "password": "x"}') == f'{{"name": "café", "password": "{REDACTED}"}}'


def test_a_json_document_keeps_its_shape_and_loses_only_the_secret() -> None:
    out = json.loads(redact_text('{"cmd": "deploy", "password": "p", "opts": {"Authorization": "Bearer x"}}'))
    assert out == {"cmd": "deploy", "password": REDACTED, "opts": {"Authorization": REDACTED}}


def test_redact_value_walks_json_inside_string_arguments() -> None:
    out = redact_value({"body": f'{{"password": "{S}"}}', "headers": f"Cookie: sid={S}", "pwd": S})
    assert S not in out and "body=" in out


def test_a_deeply_nested_value_is_redacted_without_recursion() -> None:
    deep: object = {"password": S}
    for _ in range(5000):
        deep = [deep]
    out = redact_tree(deep)
    for _ in range(5000):
        [out] = out
    assert out == {"password": REDACTED}
