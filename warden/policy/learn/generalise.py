"""Turn what one argument held into a constraint that admits the same kind of value, not only the values seen: an
address by its domain, a URL by its host, a number by a range with headroom, a command by its program, a small
enumeration as a named list, an identifier by its pattern; free text stays open. A value that looks like a secret
never becomes part of the draft."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warden.contract.redact import redact_text
from warden.policy.addresses import DomainSet
from warden.policy.learn.stats import PUNCTUATION_CAP, StringStats, ValueStats

ENUM_MAX = 10  # at most this many distinct values make a named list...
ENUM_REPEATS = 2  # ...and only when each is seen this many times on average (else it is an identifier)
DOMAIN_MIN_ADDRESSES = 3  # an external domain seen with fewer distinct addresses keeps its exact addresses
IDENTIFIER_MAX_CHARS = 128
_REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}-")
TYPED_SHARE = 0.8  # addresses (or URLs) at least this share of the values: the rest are not admitted
_CLASS_TEXT = {"digit": "0-9", "lower": "a-z", "upper": "A-Z"}

ListNamer = Callable[[str, str], str]  # (argument path, kind) -> a list name unique in the workflow


@dataclass
class Generalised:
    """A JSON Schema for one argument (None: left open), the named lists it uses, and how each path generalised."""

    schema: dict[str, Any] | None
    lists: dict[str, list[str]] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Context:
    """What generalising needs besides the values: list naming, the domains the matrix already lists (an address
    there generalises by domain at once), which arguments are commands (a code_exec tool's resource) and which name
    whom a sensitive call acts on (a payment's payee, a grant's user): a new one of those is never generalised."""

    namer: ListNamer
    known_domains: DomainSet
    commands: frozenset[str] = frozenset()
    recipients: frozenset[str] = frozenset()  # a sensitive tool's resource (a payee, a user): the values seen


def arguments(stats: ValueStats, ctx: Context, resource: str | None, prefix: str = "") -> Generalised:
    """The constraint on a tool's arguments object: one property per argument that generalises; the catalogue's
    resource argument is required when every call had it."""
    out = Generalised(None)
    properties: dict[str, Any] = {}
    for key in sorted(stats.properties):
        child = value(stats.properties[key], ctx, f"{prefix}{key}")
        out.lists.update(child.lists)
        out.notes += child.notes
        if child.schema is not None:
            properties[key] = child.schema
    if not properties:
        return out
    out.schema = {"type": "object", "properties": properties}
    if resource is not None and resource in properties and stats.present.get(resource) == stats.count:
        out.schema["required"] = [resource]
    return out


def value(stats: ValueStats, ctx: Context, path: str) -> Generalised:
    """One argument path: by its only JSON type; mixed types are left open."""
    kinds = sorted(stats.types)
    if len(kinds) != 1:
        return Generalised(None, notes=[(path, f"left open: values of {len(kinds)} JSON types")])
    kind = kinds[0]
    if kind == "string":
        return _string(stats.strings, ctx, path)
    if kind == "number":
        return _number(stats, path)
    if kind == "array" and stats.items is not None and stats.items.count:
        child = value(stats.items, ctx, f"{path}[]")
        if child.schema is None:
            return child
        child.schema = {"type": "array", "items": child.schema, "maxItems": 2 * stats.max_items + 1}
        return child
    if kind == "object" and stats.properties:
        return arguments(stats, ctx, None, f"{path}.")
    return Generalised(None, notes=[(path, f"left open: {kind}")])


def _number(stats: ValueStats, path: str) -> Generalised:
    """A range with headroom: [0 or min - span, max + span], span the largest magnitude seen (at least 1)."""
    n = stats.numbers
    if n.count == 0:
        return Generalised(None, notes=[(path, "left open: no finite number")])
    span = max(abs(n.low), abs(n.high), 1.0)
    low = 0.0 if n.low >= 0 else n.low - span
    high = n.high + span
    if not (math.isfinite(low) and math.isfinite(high)):
        return Generalised(None, notes=[(path, "left open: numbers too large for a range")])
    schema = {"type": "number", "minimum": _plain(math.floor(low)), "maximum": _plain(math.ceil(high))}
    return Generalised(schema, notes=[(path, f"number range {_plain(n.low)}..{_plain(n.high)} seen, "
                                             f"{schema['minimum']}..{schema['maximum']} allowed (headroom)")])


def _plain(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def _string(s: StringStats, ctx: Context, path: str) -> Generalised:
    if s.count == 0:
        return Generalised(None, notes=[(path, "left open: no value")])
    if s.not_email <= (1 - TYPED_SHARE) * s.count and not s.domains_overflow and s.emails:
        return _emails(s, ctx, path)
    if s.not_url <= (1 - TYPED_SHARE) * s.count and not s.domains_overflow and s.hosts:
        name = ctx.namer(path, "hosts")
        hosts = sorted(s.hosts)
        odd = f"; {s.not_url} value(s) not one plain URL, not admitted" if s.not_url else ""
        return Generalised({"type": "string", "url_host_in": name}, {name: hosts},
                           [(path, f"URLs by host: {len(hosts)} host(s){odd}")])
    if path in ctx.commands and s.not_program == 0 and s.programs:
        programs = sorted(s.programs)
        pattern = "^\\s*(?:" + "|".join(_escape(p) for p in programs) + ")(?:\\s|$)"
        return Generalised({"type": "string", "pattern": pattern},
                           notes=[(path, f"commands by program: {len(programs)} program(s)")])
    if path in ctx.recipients and not s.distinct_overflow and not s.secret_looking and s.distinct:
        name = ctx.namer(path, "seen")
        return Generalised({"type": "string", "in_list": name}, {name: sorted(s.distinct)},
                           [(path, f"whom a sensitive call acts on: the {len(s.distinct)} value(s) seen")])
    if (not s.distinct_overflow and not s.secret_looking and not s.whitespace and s.distinct
            and len(s.distinct) <= ENUM_MAX
            and s.count >= ENUM_REPEATS * len(s.distinct)):
        name = ctx.namer(path, "values")
        return Generalised({"type": "string", "in_list": name}, {name: sorted(s.distinct)},
                           [(path, f"a small enumeration: {len(s.distinct)} value(s) in {s.count} calls")])
    identifier = _identifier(s)
    if identifier is not None:
        return Generalised({"type": "string", "pattern": identifier},
                           notes=[(path, f"identifiers by pattern ({len(s.distinct)}"
                                         f"{'+' if s.distinct_overflow else ''} distinct value(s))")])
    return Generalised(None, notes=[(path, "free text: left open")])


def _emails(s: StringStats, ctx: Context, path: str) -> Generalised:
    """By domain where the matrix already lists the domain or it was seen with several addresses; the exact
    addresses elsewhere (an external domain seen few times admits only the addresses seen)."""
    by_domain = [d for d in sorted(s.emails)
                 if ctx.known_domains.admits(d) or len(s.emails[d]) >= DOMAIN_MIN_ADDRESSES or d in s.email_overflow]
    exact = sorted(a for d, kept in s.emails.items() if d not in by_domain for a in kept)
    lists: dict[str, list[str]] = {}
    options: list[dict[str, Any]] = []
    if by_domain:
        name = ctx.namer(path, "domains")
        lists[name] = by_domain
        options.append({"email_domain_in": name})
    if exact:
        name = ctx.namer(path, "addresses")
        lists[name] = exact
        options.append({"in_list": name})
    schema = {"type": "string", **options[0]} if len(options) == 1 else {"type": "string", "anyOf": options}
    note = (f"e-mail: {len(by_domain)} domain(s) by domain, {len(exact)} exact address(es) at "
            f"{len(s.emails) - len(by_domain)} external domain(s) seen few times"
            + (f"; {s.not_email} value(s) not one plain address, not admitted" if s.not_email else ""))
    return Generalised(schema, lists, [(path, note)])


def _identifier(s: StringStats) -> str | None:
    """`^PREFIX[classes]{lo,hi}$`: the common literal prefix up to its last separator, then the character classes
    seen, with room for longer values. None for text (whitespace, long, many punctuation characters)."""
    punctuation = [c for c in s.classes if c not in _CLASS_TEXT]
    if s.whitespace or s.max_len > IDENTIFIER_MAX_CHARS or len(punctuation) > PUNCTUATION_CAP or not s.classes:
        return None
    prefix = s.prefix or ""
    cut = max((i for i, c in enumerate(prefix) if not c.isalnum()), default=-1)
    prefix = prefix[:cut + 1]
    if redact_text(prefix, limit=max(len(prefix), 1)) != prefix:
        prefix = ""
    rest_min, rest_max = s.min_len - len(prefix), s.max_len - len(prefix)
    classes = "".join(_CLASS_TEXT[c] for c in ("digit", "lower", "upper") if c in s.classes)
    classes += "".join(_escape(c) for c in sorted(punctuation))
    low = 1 if rest_min > 0 else 0
    return f"^{_escape(prefix)}[{classes}]{{{low},{2 * rest_max + 2}}}$"


def _escape(text: str) -> str:
    """A literal for an ECMA/Rust regex: only the characters that are special there are escaped."""
    return "".join(f"\\{c}" if c in _REGEX_SPECIAL else c for c in text)
