"""Cut a JSON array's bytes into its elements without parsing them, so each element of a batch stands alone."""

from __future__ import annotations

import re

_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
# One step of the outline: an opening bracket with everything up to the next closing one, strings included (all
# of it is nested, so its commas do not matter); a closing bracket with what follows up to the next opening one
# or string; a comma; a string; or a lone '"' (an unterminated string). Deep nesting is a few steps, not one per
# byte, and the alternatives start with distinct bytes, so the regex never backtracks.
_STEP = re.compile(rb'[\[{](?:[^\]}"]+|' + _STRING + rb')*|[\]}][^\[{"]*|,|' + _STRING + rb'|"', re.DOTALL)
_OPEN, _CLOSE, _COMMA, _QUOTE = frozenset(b"[{"), frozenset(b"]}"), ord(","), ord('"')


def split_array(raw: bytes) -> list[tuple[int, int]] | None:
    """The (start, end) byte span of each top-level element of the JSON array in `raw`, or None when the array's
    outline is broken (unbalanced brackets, an unterminated string, bytes after the closing bracket): then no
    element boundary can be trusted. Elements are not parsed; an empty element (`[1,,2]`) is an empty span."""
    stripped = raw.lstrip()
    if stripped[:1] != b"[":
        return None
    first = len(raw) - len(stripped) + 1
    depth, spans, element_start, end = 1, [], first, -1
    for m in _STEP.finditer(raw, first):
        step = m.group()
        lead = step[0]
        if lead == _QUOTE:
            if len(step) == 1:
                return None
        elif lead in _OPEN:
            depth += step.count(b"[") + step.count(b"{") - _brackets_in_strings(step)
        elif lead == _COMMA:
            if depth == 1:
                spans.append((element_start, m.start()))
                element_start = m.start() + 1
        else:
            closes = step.count(b"]") + step.count(b"}")
            if depth - closes > 1:  # stays nested: only the depth matters
                depth -= closes
                continue
            depth, end, bounds = _top_level(step, depth, m.start())
            for at in bounds:
                spans.append((element_start, at))
                element_start = at + 1
            if end >= 0:
                break
    if end < 0 or raw[end + 1:].strip():
        return None
    if spans or raw[element_start:end].strip():
        spans.append((element_start, end))
    return spans


def _top_level(step: bytes, depth: int, offset: int) -> tuple[int, int, list[int]]:
    """Walk a closing step that returns to the top level: (depth after, offset of the array's `]` or -1, offsets
    of top-level commas). A leading run of closing brackets (the end of a deep element) is skipped at once."""
    i, bounds = 0, list[int]()
    if depth > 1 and step[: depth - 1].strip(b"]}") == b"":
        i, depth = depth - 1, 1
    for i in range(i, len(step)):  # noqa: B020 - continues from the skipped run
        byte = step[i]
        if byte in _CLOSE:
            depth -= 1
            if depth == 0:
                return 0, offset + i, bounds
        elif byte == _COMMA and depth == 1:
            bounds.append(offset + i)
    return depth, -1, bounds


_STRINGS = re.compile(_STRING, re.DOTALL)


def _brackets_in_strings(step: bytes) -> int:
    """Opening brackets inside the strings of an opening step, which do not nest anything."""
    if b'"' not in step:
        return 0
    return sum(s.count(b"[") + s.count(b"{") for s in _STRINGS.findall(step))
