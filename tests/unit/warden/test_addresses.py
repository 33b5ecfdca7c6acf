"""Domain checks that adversarial email and URL forms cannot get through, and that plain ones pass."""

from __future__ import annotations

import pytest

from warden.policy.addresses import DomainSet, domain_check, email_domain, normalise_domain, url_host

DOMAINS = DomainSet(["example.com", "*.corp.example.org", "bücher.de"])
email_ok = domain_check(email_domain, DOMAINS)
url_ok = domain_check(url_host, DOMAINS)


@pytest.mark.parametrize("address", [
    "ana@example.com", "Ana.Lee+tag@EXAMPLE.com", "ops@eu.corp.example.org", "kim@bücher.de", "kim@xn--bcher-kva.de",
])
def test_plain_addresses_in_the_list_pass(address: str) -> None:
    assert email_ok(address)


@pytest.mark.parametrize("address", [
    "ana@evil.example.net",
    "Ana <ana@example.com>",                 # display name
    '"ana@example.com"@evil.example.net',    # quoted local part naming the listed domain
    "ana@example.com.",                       # trailing dot
    "ana@example.com.evil.example.net",       # listed domain as a prefix
    "ana@example.com:25",                     # port
    "ana@exаmple.com",                        # Cyrillic а: a different domain (punycode)
    "ana@example.com,eve@evil.example.net",   # two addresses
    "ana@example.com@evil.example.net",       # two @
    "ana%example.com@evil.example.net",       # percent hack routes to evil
    "ana@[192.0.2.1]",                        # domain literal
    " ana@example.com", "ana@example.com\n",  # whitespace
    "ana@corp.example.org",                   # `*.` admits subdomains, not the apex
    "", "example.com",
])
def test_adversarial_or_outside_addresses_fail(address: str) -> None:
    assert not email_ok(address)


def test_non_strings_fail_every_check() -> None:
    assert not email_ok(["ana@example.com"]) and not url_ok(None) and not url_ok(3)


@pytest.mark.parametrize("url", [
    "https://example.com/a?b=c", "http://example.com", "https://EXAMPLE.com/x", "https://example.com:443/x",
    "https://a.corp.example.org/x", "https://bücher.de/katalog", "https://xn--bcher-kva.de/",
])
def test_plain_urls_in_the_list_pass(url: str) -> None:
    assert url_ok(url)


@pytest.mark.parametrize("url", [
    "https://evil.example.net/",
    "https://example.com@evil.example.net/",     # userinfo naming the listed host
    "https://user:pw@example.com/",              # userinfo at all
    "https://example.com:443@evil.example.net/",
    "https://evil.example.net\\@example.com/",   # backslash: browsers and parsers disagree
    "https://example.com./",                      # trailing dot
    "https://example.com:8443/",                  # another port
    "https://example.com.evil.example.net/",
    "https://exаmple.com/",                       # homoglyph
    "https://ex%61mple.com/",                     # escapes in the host
    "https://evil.example.net/?next=https://example.com",
    "https://evil.example.net#@example.com",
    "javascript:alert(1)//example.com", "ftp://example.com/", "//example.com/x", "example.com/x",
    "https://example.com\t.evil.example.net/", " https://example.com/", "https://[::1]/",
])
def test_adversarial_or_outside_urls_fail(url: str) -> None:
    assert not url_ok(url)


def test_list_entries_are_normalised_and_bad_ones_refused() -> None:
    assert normalise_domain("Bücher.DE") == "xn--bcher-kva.de"
    assert normalise_domain("*.Example.com") == "*.example.com"
    for bad in ("example.com.", "a@b.com", "https://x.com", "", "exa mple.com"):
        with pytest.raises(ValueError):
            normalise_domain(bad)
