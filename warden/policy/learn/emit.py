"""Write a draft matrix as YAML with a comment above each drafted entry (its evidence and how it generalised).
PyYAML cannot write comments, so mappings and lists are laid out here and every scalar and flow value is written
by PyYAML itself: agent-supplied text is quoted and escaped exactly as the loader reads it back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

INDENT = "  "


@dataclass(frozen=True)
class Noted:
    """A value with the comment lines written above it."""

    value: Any
    comment: tuple[str, ...]


def plain(node: Any) -> Any:
    """The document without its comments: what loading the emitted YAML gives back."""
    if isinstance(node, Noted):
        return plain(node.value)
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def emit(document: dict[str, Any], header: tuple[str, ...] = ()) -> str:
    """The document as block YAML (keys in insertion order), comments included."""
    lines = [f"# {safe_comment(c)}" if c else "#" for c in header]
    _mapping(document, 0, lines)
    return "\n".join(lines) + "\n"


def safe_comment(text: str) -> str:
    """One comment line: control and format characters escaped, so agent text cannot end the comment."""
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


class _OneLine(yaml.SafeDumper):
    """Strings holding a line break or a character that is not printable are double-quoted, so every escape stays
    on one line (a plain or single-quoted scalar would carry the break into the block layout)."""


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = '"' if any(not c.isprintable() for c in text) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_OneLine.add_representer(str, _string)


def _flow(value: Any) -> str:
    text = yaml.dump(value, Dumper=_OneLine, default_flow_style=True, sort_keys=False, allow_unicode=False,
                     width=1 << 30)
    text = text.rstrip("\n")
    return text[:-4].rstrip("\n") if text.endswith("\n...") else text


def _has_notes(node: Any) -> bool:
    if isinstance(node, Noted):
        return True
    if isinstance(node, dict):
        return any(_has_notes(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_notes(v) for v in node)
    return False


def _comments(node: Any, depth: int, lines: list[str]) -> Any:
    while isinstance(node, Noted):
        lines.extend(f"{INDENT * depth}# {safe_comment(c)}" for c in node.comment)
        node = node.value
    return node


def _mapping(node: dict[str, Any], depth: int, lines: list[str]) -> None:
    for key, raw in node.items():
        value = _comments(raw, depth, lines)
        head = f"{INDENT * depth}{_flow(key)}:"
        if isinstance(value, dict) and value and (_has_notes(value) or len(_flow(value)) > 100):
            lines.append(head)
            _mapping(value, depth + 1, lines)
        elif isinstance(value, list) and value and (_has_notes(value) or len(_flow(value)) > 100):
            lines.append(head)
            _sequence(value, depth + 1, lines)
        else:
            lines.append(f"{head} {_flow(value)}")


def _sequence(node: list[Any], depth: int, lines: list[str]) -> None:
    for raw in node:
        value = _comments(raw, depth, lines)
        if isinstance(value, dict) and value and _has_notes(value):
            lines.append(f"{INDENT * depth}-")
            _mapping(value, depth + 1, lines)
        else:
            lines.append(f"{INDENT * depth}- {_flow(value)}")
