"""A workflow's provenance settings compiled once per policy: which calls are traced, whose results are untrusted or
trusted, and the values the policy itself names (its lists, its constraints' enum and const), which ground a
value whatever the session read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any

from warden.contract.matrix import Category, ProvenanceScope
from warden.policy.addresses import normalise_domain
from warden.policy.values import read_values

_MAX_CACHED = 10_000


@dataclass
class ProvenanceChecks:
    """One workflow's provenance rule, ready for the hot path."""

    sensitive: frozenset[Category] = frozenset()
    untrusted_tools: tuple[str, ...] = ()
    trusted_tools: tuple[str, ...] = ()
    allowed: frozenset[str] = frozenset()  # normalised values (`kind:normal`) the policy names
    allowed_domains: tuple[str, ...] = ()  # `.example.com` suffixes from `*.example.com` list entries
    within: timedelta = timedelta(minutes=30)
    _source: dict[str, str] = field(default_factory=dict, repr=False)

    def source(self, tool: str, categories: frozenset[Category]) -> str:
        """`trusted`, `untrusted` or `other`: how a result of this tool counts. A tool named trusted wins over the
        catalogue's `untrusted_input` (the author said so for this workflow); names are cached."""
        cached = self._source.get(tool)  # one catalogue per policy: a tool's categories never change here
        if cached is not None:
            return cached
        if any(fnmatchcase(tool, g) for g in self.trusted_tools):
            found = "trusted"
        elif Category.untrusted_input in categories or any(fnmatchcase(tool, g) for g in self.untrusted_tools):
            found = "untrusted"
        else:
            found = "other"
        if len(self._source) < _MAX_CACHED:
            self._source[tool] = found
        return found

    def names(self, value: str) -> bool:
        """The policy names this value: it is in a list or a constraint's enum/const, or it is a host a list names
        (`*.example.com` too). An address at a listed domain is not named: the domain says where mail may go, not
        who asked for it (an in-scope hijack writes to a colleague's look-alike or a stranger there)."""
        if value in self.allowed:
            return True
        kind, _, domain = value.partition(":")
        return kind == "host" and bool(self.allowed_domains) and ("." + domain).endswith(self.allowed_domains)


def compile_provenance(scope: ProvenanceScope, lists: Mapping[str, list[str]],
                       schemas: Iterable[Mapping[str, Any]]) -> ProvenanceChecks:
    allowed: set[str] = set()
    suffixes: list[str] = []
    for entries in lists.values():
        for entry in entries:
            if entry.startswith("*.") and _domain(entry) is not None:
                suffixes.append(str(_domain(entry))[1:])
                continue
            allowed |= _values(entry)
    for schema in schemas:
        for literal in _literals(schema):
            allowed |= _values(literal)
    return ProvenanceChecks(frozenset(scope.sensitive), tuple(scope.untrusted_tools), tuple(scope.trusted_tools),
                            frozenset(allowed), tuple(suffixes), scope.within)


def _values(entry: Any) -> set[str]:
    """A list entry's or literal's values, the whole of a short string among them (read_values gives it)."""
    return read_values(entry) if isinstance(entry, str | int) and not isinstance(entry, bool) else set()


def _domain(entry: str) -> str | None:
    try:
        return normalise_domain(entry)
    except ValueError:
        return None


def _literals(schema: Any) -> Iterator[Any]:
    """Every value an `enum` or `const` of the (expanded) schema allows, at any depth."""
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key == "enum" and isinstance(value, list):
                yield from value
            elif key == "const":
                yield value
            else:
                yield from _literals(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _literals(item)
