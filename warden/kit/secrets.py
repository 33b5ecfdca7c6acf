"""Policies name secrets by reference (`env:VAR`, `file:PATH`), so no secret is ever written into a matrix."""

from __future__ import annotations

import os
from pathlib import Path


class SecretUnavailable(LookupError):
    """A reference that names nothing: the variable is unset or the file unreadable. Says which, never a value."""


def resolve(ref: str) -> str:
    """The secret a reference names, stripped of surrounding whitespace."""
    scheme, sep, name = ref.partition(":")
    if not sep or not name:
        raise SecretUnavailable(f"{ref!r} is not a secret reference (use env:VAR or file:PATH)")
    if scheme == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretUnavailable(f"environment variable {name} is not set")
        return value.strip()
    if scheme == "file":
        try:
            return Path(name).read_text().strip()
        except OSError as exc:
            raise SecretUnavailable(f"cannot read {name}: {exc.strerror or exc}") from None
    raise SecretUnavailable(f"unknown secret reference scheme {scheme!r} (use env: or file:)")
