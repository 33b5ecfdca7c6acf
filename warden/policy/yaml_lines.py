"""Read one policy file's YAML with the line of every entry and its duplicate keys, so every lint error can say
`file:line` and a key written twice (YAML keeps the last one silently) is an error, not a lost setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str, ...]


@dataclass
class ReadYaml:
    """A file's document, the line (1-based) of each matrix path in it, and each key written twice."""

    document: Any
    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int, int]] = field(default_factory=list)
    """(path of the repeated key, its line, the line of its first occurrence)."""


def read_yaml(text: str) -> ReadYaml:
    """Parse `text` (raises yaml.YAMLError like `yaml.safe_load`)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    out = ReadYaml(yaml.safe_load(text))
    if node is not None:
        _walk(node, (), out, set())
    return out


def _walk(node: yaml.Node, path: Path, out: ReadYaml, seen: set[int]) -> None:
    if id(node) in seen:  # an alias to a node already walked (or a recursive one)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            name, line = str(key.value), key.start_mark.line + 1
            if name in first:
                out.duplicates.append(((*path, name), line, first[name]))
            first.setdefault(name, line)
            out.lines[(*path, name)] = line
            _walk(value, (*path, name), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.lines[(*path, str(i))] = item.start_mark.line + 1
            _walk(item, (*path, str(i)), out, seen)
