"""The exit codes every `warden` command shares, so CI can gate on any of them the same way (docs/cli.md)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """What a command's exit status means; the same number means the same thing in every command."""

    OK = 0
    """It ran and has nothing to report: no findings, every case passed, the chain holds."""
    FOUND = 1
    """It ran and the answer is negative: findings found, a case failed, a chain is broken."""
    INVALID_INPUT = 2
    """Usage, a setting, a filter or an input file is invalid (click's usage errors are 2 as well)."""
    POLICY_ERROR = 3
    """The matrix does not load: lint errors, or a command given an invalid policy."""
    UNREACHABLE = 4
    """What it must read or act on cannot be reached: the database, the incident API, the broker."""
