"""One line on standard error and the shared exit code (service/cli/exits.py), never a traceback."""

from __future__ import annotations

from typing import IO, Any

import click

from service.cli.exits import Exit


class Failure(click.ClickException):
    """A command that cannot do what it was asked: `warden: <why>` and its exit code."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.exit_code = int(code)

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"warden: {self.format_message()}", err=True, file=file)


def unreachable(what: str, exc: BaseException) -> Failure:
    """`what` cannot be reached (exit 4), with the cause's own words on the same line."""
    cause = " ".join(str(exc).split()) or type(exc).__name__
    return Failure(f"cannot reach {what}: {cause}", Exit.UNREACHABLE)
