"""Domain checks for email addresses and URLs that parse them the strict way, so adversarial forms fail closed.

An address or URL passes only when it is one plain address (or one absolute http(s) URL) whose domain, in its
ASCII (punycode) form, is in the list. Display names, quoted local parts, domain literals, trailing dots,
`userinfo@host`, ports other than the scheme's default, backslashes, whitespace and percent-escapes in the
authority are all refused, whatever the host they seem to name: they are how a recipient is smuggled past a
naive `endswith("@example.com")`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache

import idna
from email_validator import EmailNotValidError, validate_email
from yarl import URL

_SCHEMES = {"https": 443, "http": 80}
_CACHED = 4096  # distinct addresses or URLs whose parse is kept (per process, across policies: parsing is pure)
_REFUSED_IN_URL = frozenset("\\%") | frozenset(chr(c) for c in range(33)) | {chr(127)}


def normalise_domain(entry: str) -> str:
    """A list entry as the checks compare it: lower-case ASCII (IDNA 2008 + UTS 46). `*.` prefixes are kept.
    Raises ValueError for an entry that is not a domain (the lint reports it)."""
    wildcard = entry.startswith("*.")
    name = entry[2:] if wildcard else entry
    if not name or name.endswith(".") or any(c in name for c in "@:/ "):
        raise ValueError(f"{entry!r} is not a domain name")
    try:
        ascii_name = idna.encode(name, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise ValueError(f"{entry!r} is not a domain name: {exc}") from None
    return ("*." if wildcard else "") + ascii_name


class DomainSet:
    """Domains as ASCII names; `*.example.com` admits every subdomain of example.com but not example.com itself."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact: frozenset[str] = frozenset()
        self.suffixes: tuple[str, ...] = ()
        exact, suffixes = set(), []
        for entry in entries:
            name = normalise_domain(entry)
            if name.startswith("*."):
                suffixes.append(name[1:])  # ".example.com"
            else:
                exact.add(name)
        self.exact, self.suffixes = frozenset(exact), tuple(suffixes)

    def admits(self, ascii_domain: str) -> bool:
        domain = ascii_domain.lower()
        if domain in self.exact:
            return True
        return bool(self.suffixes) and domain.endswith(self.suffixes)


@lru_cache(maxsize=_CACHED)
def email_domain(value: str) -> str | None:
    """The ASCII domain of one plain email address, or None when `value` is not exactly one plain address.
    Cached: parsing costs tens of µs, and an agent mails the same few addresses again and again."""
    try:
        parsed = validate_email(value, check_deliverability=False, allow_display_name=False,
                                allow_quoted_local=False, allow_domain_literal=False)
    except EmailNotValidError:
        return None
    return parsed.ascii_domain


@lru_cache(maxsize=_CACHED)
def url_host(value: str) -> str | None:
    """The ASCII host of one absolute http(s) URL with no userinfo and the scheme's default port, else None."""
    if any(c in _REFUSED_IN_URL for c in value):
        return None
    try:
        url = URL(value)
        host = url.raw_host
        port = url.explicit_port
    except ValueError:
        return None
    scheme = url.scheme.lower()
    if scheme not in _SCHEMES or not url.is_absolute() or host is None:
        return None
    if url.raw_user is not None or url.raw_password is not None or "@" in (url.raw_authority or ""):
        return None
    if port is not None and port != _SCHEMES[scheme]:
        return None
    if not host or host.endswith(".") or host.startswith("["):
        return None
    return host.lower()


def domain_check(parse: Callable[[str], str | None], domains: DomainSet) -> Callable[[object], bool]:
    """A format check: the value is a string, `parse` finds its domain, and the set admits it."""

    def check(value: object) -> bool:
        if not isinstance(value, str):
            return False
        domain = parse(value)
        return domain is not None and domains.admits(domain)

    return check
