"""Bounded summaries of what a workflow did, so `warden policy learn` can read millions of events in fixed memory:
counts, ranges, prefixes and capped sets, never the events themselves."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from warden.contract.redact import redact_text
from warden.policy.addresses import email_domain, url_host

SESSIONS_CAP = 1_000  # distinct sessions counted per entry; past it the evidence says "1000+"
DISTINCT_CAP = 64  # distinct short strings kept per argument (a small enumeration is far fewer)
DOMAINS_CAP = 256  # distinct e-mail domains or URL hosts per argument
ADDRESSES_CAP = 32  # distinct addresses kept per e-mail domain
PROGRAMS_CAP = 32  # distinct leading words of a command
PROPERTIES_CAP = 64  # distinct argument names per object level
MAX_DEPTH = 3  # argument paths deeper than this are left open
MAX_KEPT_CHARS = 256  # a longer string is never kept as a value (it is text, not an enumeration)
PUNCTUATION_CAP = 8  # an identifier uses few punctuation characters; more is text
_PROGRAM = re.compile(r"^\s*([A-Za-z0-9_./-]{1,64})(?:\s|$)")
_SPACE = re.compile(r"\s")
_CLASSES = (("digit", frozenset("0123456789")), ("lower", frozenset("abcdefghijklmnopqrstuvwxyz")),
            ("upper", frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")))
_ALNUM = frozenset().union(*(members for _, members in _CLASSES))


@dataclass
class Evidence:
    """How many events and sessions an entry rests on, and when it was first and last seen."""

    events: int = 0
    sessions: set[str] = field(default_factory=set)
    sessions_overflow: bool = False
    first: datetime | None = None
    last: datetime | None = None

    def add(self, ts: datetime, session: str | None) -> None:
        self.events += 1
        if session is not None and session not in self.sessions:
            if len(self.sessions) < SESSIONS_CAP:
                self.sessions.add(session)
            else:
                self.sessions_overflow = True
        self.first = ts if self.first is None or ts < self.first else self.first
        self.last = ts if self.last is None or ts > self.last else self.last

    def describe(self) -> str:
        """`12 events, 3 sessions, 2026-01-05T09:00:00Z .. 2026-01-05T10:00:00Z`: evidence for a YAML comment."""
        sessions = f"{SESSIONS_CAP}+" if self.sessions_overflow else str(len(self.sessions))
        seen = f"{_ts(self.first)} .. {_ts(self.last)}" if self.first and self.last else "-"
        return f"{self.events} event{'s' * (self.events != 1)}, {sessions} session(s), seen {seen}"


def _ts(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


@dataclass
class StringStats:
    """What the string values of one argument looked like: kept only as far as the generalisations need."""

    count: int = 0
    distinct: dict[str, int] = field(default_factory=dict)
    distinct_overflow: bool = False
    secret_looking: int = 0
    whitespace: bool = False
    max_len: int = 0
    min_len: int = 0
    prefix: str | None = None  # common to every value
    classes: set[str] = field(default_factory=set)  # upper, lower, digit, and each punctuation character
    emails: dict[str, set[str]] = field(default_factory=dict)  # domain -> addresses (capped)
    email_overflow: set[str] = field(default_factory=set)  # domains with more addresses than kept
    not_email: int = 0
    hosts: dict[str, int] = field(default_factory=dict)
    not_url: int = 0
    programs: dict[str, int] = field(default_factory=dict)
    not_program: int = 0
    domains_overflow: bool = False

    def add(self, value: str) -> None:
        self.count += 1
        n = len(value)
        self.min_len = n if self.count == 1 else min(self.min_len, n)
        self.max_len = max(self.max_len, n)
        self.whitespace = self.whitespace or bool(_SPACE.search(value))
        if n <= MAX_KEPT_CHARS and value in self.distinct:
            self.distinct[value] += 1
        elif n <= MAX_KEPT_CHARS and len(self.distinct) < DISTINCT_CAP and not self._secret(value):
            self.distinct[value] = 1
        else:
            self.distinct_overflow = True
        self.prefix = value if self.prefix is None else _common_prefix(self.prefix, value)
        if len(self.classes) <= 3 + PUNCTUATION_CAP:
            chars = set(value)
            self.classes |= chars - _ALNUM
            self.classes |= {name for name, members in _CLASSES if not chars.isdisjoint(members)}
        self._typed(value)

    def _secret(self, value: str) -> bool:
        """Whether a value looks like a secret (the redaction helpers change it): such a value is never kept.
        Judged only when a value is about to be kept, so the cost is per distinct value, not per event."""
        secret = redact_text(value, limit=max(len(value), 1)) != value
        self.secret_looking += secret
        return secret

    def _typed(self, value: str) -> None:
        domain = email_domain(value) if "@" in value else None
        if domain is None:
            self.not_email += 1
        elif domain in self.emails or len(self.emails) < DOMAINS_CAP:
            kept = self.emails.setdefault(domain, set())
            if value in kept:
                pass
            elif len(kept) >= ADDRESSES_CAP or self._secret(value):
                self.email_overflow.add(domain)  # generalised by domain, never kept as an exact address
            else:
                kept.add(value)
        else:
            self.domains_overflow = True
        host = url_host(value) if "://" in value else None
        if host is None:
            self.not_url += 1
        elif host in self.hosts or len(self.hosts) < DOMAINS_CAP:
            self.hosts[host] = self.hosts.get(host, 0) + 1
        else:
            self.domains_overflow = True
        m = _PROGRAM.match(value)
        program = m.group(1) if m else None
        if program is not None and program in self.programs:
            self.programs[program] += 1
        elif program is not None and len(self.programs) < PROGRAMS_CAP and not self._secret(program):
            self.programs[program] = 1
        else:
            self.not_program += 1


def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return a[:i]


@dataclass
class NumberStats:
    """The range of one argument's numbers."""

    count: int = 0
    low: float = math.inf
    high: float = -math.inf
    integers: bool = True

    def add(self, value: float) -> None:
        self.count += 1
        self.low, self.high = min(self.low, value), max(self.high, value)
        self.integers = self.integers and float(value).is_integer()


@dataclass
class ValueStats:
    """One argument path: the JSON types it held, and per type what generalises it."""

    count: int = 0
    types: dict[str, int] = field(default_factory=dict)
    strings: StringStats = field(default_factory=StringStats)
    numbers: NumberStats = field(default_factory=NumberStats)
    items: ValueStats | None = None  # arrays: every element
    max_items: int = 0
    properties: dict[str, ValueStats] = field(default_factory=dict)  # objects: each key
    properties_overflow: bool = False
    present: dict[str, int] = field(default_factory=dict)  # objects: how many of them held each key

    def add(self, value: Any, depth: int = 0) -> None:
        self.count += 1
        kind = _kind(value)
        self.types[kind] = self.types.get(kind, 0) + 1
        if kind == "string":
            self.strings.add(value)
        elif kind == "number":
            if math.isfinite(value):
                self.numbers.add(float(value))
            else:
                self.types["non-finite"] = self.types.get("non-finite", 0) + 1
        elif kind == "array" and depth < MAX_DEPTH:
            self.max_items = max(self.max_items, len(value))
            if self.items is None:
                self.items = ValueStats()
            for item in value:
                self.items.add(item, depth + 1)
        elif kind == "object" and depth < MAX_DEPTH:
            self.add_object(value, depth)

    def add_object(self, value: dict[str, Any], depth: int = 0) -> None:
        for key, item in value.items():
            stats = self.properties.get(key)
            if stats is None:
                if len(self.properties) >= PROPERTIES_CAP:
                    self.properties_overflow = True
                    continue
                stats = self.properties[key] = ValueStats()
            self.present[key] = self.present.get(key, 0) + 1
            stats.add(item, depth + 1)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "other"
