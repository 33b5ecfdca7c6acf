"""Label matchers in Alertmanager's shape (`label="value"`, `label!="value"`, `label=~"regex"`, `label!~"regex"`),
for silences and inhibition rules: which incidents they apply to, by the labels every incident has.

An incident's labels are few and fixed (`LABELS`): its workflow, rule, severity, agent, target, responder, tier and
whether its agent is quarantined. `=` compares exactly unless the value holds a glob character (`*`, `?`, `[`),
then it is a glob (fnmatch, case-sensitive), so `target="vault://billing/*"` reads as an operator expects; `=~` is
a regular expression anchored at both ends, as in Alertmanager. A label an incident has no value for (an agent no
workflow lists has no workflow) is the empty string, so `workflow=""` matches those."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

Label = Literal["workflow", "rule", "severity", "agent", "target", "responder", "tier", "quarantined"]
LABELS: tuple[Label, ...] = ("workflow", "rule", "severity", "agent", "target", "responder", "tier", "quarantined")
_GLOB = re.compile(r"[*?\[]")
# label, operator, value: the value quoted ("..." with \" and \\ escapes) or bare up to the end
_MATCHER = re.compile(r'^\s*([a-z_]+)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*$')


@dataclass(frozen=True)
class Matcher:
    """One parsed matcher. `text` is how it is written back (quoted), so a stored silence reads as it was given."""

    label: Label
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    @property
    def text(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{escaped}"'

    def __str__(self) -> str:
        return self.text

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.label, "")
        if self.op in ("=", "!="):
            equal = fnmatchcase(value, self.value) if _GLOB.search(self.value) else value == self.value
            return equal if self.op == "=" else not equal
        found = re.fullmatch(self.value, value) is not None
        return found if self.op == "=~" else not found


def parse_matcher(text: str) -> Matcher:
    """A matcher from its text; ValueError saying what is wrong (an unknown label, an operator, a regex)."""
    m = _MATCHER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a matcher: write label=\"value\" (operators =, !=, =~, !~)")
    label, op, quoted, bare = m.groups()
    if label not in LABELS:
        raise ValueError(f"{text!r}: unknown label {label!r} (labels: {', '.join(LABELS)})")
    value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: not a regular expression ({exc})") from None
    return Matcher(label, op, value)  # type: ignore[arg-type]  # checked against LABELS above


def exact_matcher(label: str, value: str) -> str:
    """A matcher text that matches exactly `value` (a value with glob characters becomes an escaped regex)."""
    if _GLOB.search(value):
        return Matcher(label, "=~", re.escape(value)).text  # type: ignore[arg-type]  # a label of ours
    return Matcher(label, "=", value).text  # type: ignore[arg-type]


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(t) for t in texts)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches (an empty list matches everything, as in Alertmanager)."""
    return all(m.matches(labels) for m in matchers)
