"""Compile a workflow's scope globs once per policy, so a match is one regex call whatever the matrix size."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate

from warden.contract.matrix import Scope

_NOTHING = re.compile(r"(?!)")


@dataclass(frozen=True)
class GlobSet:
    """A list of shell-style globs (`crm.read_*`, `s3://bucket/*`) as one compiled regex."""

    patterns: tuple[str, ...]
    regex: re.Pattern[str]

    @classmethod
    def of(cls, patterns: list[str]) -> GlobSet:
        if not patterns:
            return cls((), _NOTHING)
        return cls(tuple(patterns), re.compile("|".join(f"(?:{translate(p)})" for p in patterns)))

    def matches(self, value: str) -> bool:
        return self.regex.match(value) is not None

    def __str__(self) -> str:
        return ", ".join(self.patterns) or "(none)"


@dataclass(frozen=True)
class CompiledScope:
    """One workflow's scope with every glob list compiled."""

    tools: GlobSet
    data: GlobSet
    secrets: GlobSet
    identity_ops: GlobSet

    @classmethod
    def of(cls, scope: Scope) -> CompiledScope:
        return cls(
            tools=GlobSet.of(scope.tools),
            data=GlobSet.of(scope.data),
            secrets=GlobSet.of(scope.secrets),
            identity_ops=GlobSet.of(scope.identity_changes.require_approval),
        )
