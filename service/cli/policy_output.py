"""The `--output text|json|jsonl` option of the policy commands (docs/cli.md), and text made safe for a terminal."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("text", "json", "jsonl")


def output_option(f: F) -> F:
    """`--output/-o text|json|jsonl`, and `--json` kept as a hidden alias of `--output json`."""
    f = click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as --output json.")(f)
    return click.option("--output", "-o", "output", type=click.Choice(FORMATS), default="text", show_default=True,
                        help="text for people; json: one document; jsonl: one object per line, then a summary.")(f)


def chosen(output: str, as_json: bool) -> str:
    return "json" if as_json else output


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


def emit_jsonl(items: Iterable[Any]) -> None:
    for item in items:
        click.echo(json.dumps(item, ensure_ascii=False, default=str))


def shown(text: object) -> str:
    """Text from agents (ids, targets, titles) with control and format characters escaped: an event id holding
    an ANSI sequence or a bidi override must not rewrite the terminal it is printed on."""
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in str(text))
