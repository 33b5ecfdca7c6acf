"""The tool catalogue compiled for the hot path: a tool name to its categories and resource argument, one lookup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from warden.contract.matrix import Category, ToolSpec

_GLOB = frozenset("*?[")
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class CatalogEntry:
    """A tool's spec with its categories as a frozenset, ready for set tests."""

    name: str
    spec: ToolSpec
    categories: frozenset[Category]

    def argument(self, arguments: Mapping[str, Any] | None) -> Any:
        """The value at the spec's `resource` path in the call's arguments, or None."""
        return argument_at(arguments, self.spec.resource) if self.spec.resource else None


def argument_at(arguments: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a dotted argument path, or None when any step is missing."""
    node: Any = arguments
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


@dataclass
class ToolCatalogue:
    """Exact names first, then globs in the order written; results are cached per tool name (bounded)."""

    tools: Mapping[str, ToolSpec]
    _exact: dict[str, CatalogEntry] = field(init=False, default_factory=dict, repr=False)
    _globs: list[tuple[str, CatalogEntry]] = field(init=False, default_factory=list, repr=False)
    _cache: dict[str, CatalogEntry | None] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name, spec in self.tools.items():
            entry = CatalogEntry(name, spec, frozenset(spec.categories))
            if _GLOB & set(name):
                self._globs.append((name, entry))
            else:
                self._exact[name] = entry

    def entry(self, tool: str) -> CatalogEntry | None:
        found = self._exact.get(tool)
        if found is not None or not self._globs:
            return found
        if tool in self._cache:
            return self._cache[tool]
        found = next((e for pattern, e in self._globs if fnmatchcase(tool, pattern)), None)
        if len(self._cache) < _MAX_CACHED:  # tool names are few; a flood of random ones just stops caching
            self._cache[tool] = found
        return found
