"""Merge the files of a policy folder in name order, remembering which file each entry came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warden.policy.model import PolicyIssue

Provenance = dict[tuple[str, ...], str]
# Sections merged key by key across the files of a folder; a later file (in name order) wins a key.
_KEYED = (("owners",), ("workflows",), ("rules", "builtin"), ("defaults",), ("lists",), ("tools",),
          ("notifications",))
# Sections whose lists concatenate across files, in name order.
_LISTED = (("rules", "custom"), ("playbooks",))


def merge(documents: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], Provenance]:
    """Merge documents in name order and remember which file each entry came from."""
    merged: dict[str, Any] = {}
    provenance: Provenance = {}
    for fname, doc in documents:
        for key, value in doc.items():
            provenance.setdefault((key,), fname)
            if key == "rules" and isinstance(value, dict):
                if not isinstance(merged.get("rules"), dict):
                    merged["rules"] = {}
                for rule_key, rule_value in value.items():
                    _merge_entry(merged["rules"], ("rules", rule_key), rule_value, fname, provenance)
            else:
                _merge_entry(merged, (key,), value, fname, provenance)
    return merged, provenance


def _merge_entry(
    target: dict[str, Any], path: tuple[str, ...], value: Any, fname: str, provenance: Provenance
) -> None:
    """Keyed sections merge key by key (later file wins), list sections concatenate, the rest is replaced."""
    name = path[-1]
    current = target.get(name)
    if path in _KEYED and isinstance(value, dict) and isinstance(current, dict):
        current.update(value)
    elif path in _LISTED and isinstance(value, list) and isinstance(current, list):
        for i in range(len(value)):
            provenance[(*path, str(len(current) + i))] = fname
        current.extend(value)
        return
    else:
        target[name] = dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value
        current = target[name]
        if isinstance(value, list):
            for i in range(len(value)):
                provenance[(*path, str(i))] = fname
    provenance[path] = fname if not isinstance(value, dict) else provenance.get(path, fname)
    if isinstance(value, dict):
        for k in value:
            provenance[(*path, str(k))] = fname


def file_for(path: tuple[str, ...], provenance: Provenance, fallback: str) -> str:
    """The file that defined the longest known prefix of `path`."""
    for n in range(len(path), 0, -1):
        f = provenance.get(tuple(path[:n]))
        if f:
            return f
    return fallback


Lines = dict[tuple[str, ...], tuple[str, int]]
"""Matrix path -> (file, line) where it was written, as the merged document numbers list entries."""


def merge_lines(documents: list[tuple[str, dict[str, Any], dict[tuple[str, ...], int]]]) -> Lines:
    """Each file's (path -> line), re-indexed as `merge` concatenates the listed sections (`rules.custom`, ...)."""
    out: Lines = {}
    seen = dict.fromkeys(_LISTED, 0)
    for fname, doc, lines in documents:
        for path, line in lines.items():
            out[_shifted(path, seen)] = (fname, line)
        for section in _LISTED:
            value: Any = doc
            for key in section:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, list):
                seen[section] += len(value)
    return out


def _shifted(path: tuple[str, ...], seen: dict[tuple[str, ...], int]) -> tuple[str, ...]:
    for section, before in seen.items():
        n = len(section)
        if before and path[:n] == section and len(path) > n and path[n].isdigit():
            return (*section, str(int(path[n]) + before), *path[n + 1:])
    return path


@dataclass(frozen=True)
class Locator:
    """Where a matrix path was written: the file that defined it (the merge's provenance) and the line in it."""

    provenance: Provenance
    lines: Lines
    fallback: str

    def issue(self, path: tuple[str, ...], reason: str, level: str = "error") -> PolicyIssue:
        """A located issue: the file and line of the longest prefix of `path` written in that file."""
        fname = file_for(path, self.provenance, self.fallback)
        line = None
        for n in range(len(path), 0, -1):
            found = self.lines.get(tuple(path[:n]))
            if found is not None and found[0] == fname:
                line = found[1]
                break
        return PolicyIssue(fname, ".".join(path), reason, level, line)
