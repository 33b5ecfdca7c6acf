"""`--output text|json|jsonl`, one meaning in every command (docs/cli.md), and `--json` kept as a hidden alias."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click

from warden.contract.findings import Finding

Output = Literal["text", "json", "jsonl"]
OUTPUTS: tuple[Output, ...] = ("text", "json", "jsonl")
F = TypeVar("F", bound=Callable[..., Any])


def output_option(json_alias: Output = "json") -> Callable[[F], F]:
    """Add `--output/-o` (passed to the command as `output`) and the hidden `--json`, which means `json_alias`
    (what `--json` printed before `--output` existed)."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, output: Output, as_json: bool, **kwargs: Any) -> Any:
            return command(*args, output=json_alias if as_json and output == "text" else output, **kwargs)

        with_alias = click.option("--json", "as_json", is_flag=True, hidden=True,
                                  help=f"Same as --output {json_alias}.")(wrapper)
        return click.option("-o", "--output", type=click.Choice(OUTPUTS), default="text", show_default=True,
                            help="text for people; json: one document; jsonl: one object per line, then a summary "
                                 "object.")(with_alias)  # type: ignore[return-value]

    return decorate


def line(value: Any) -> str:
    """One JSON value on one line, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False)


def finding_line(f: Finding) -> dict[str, Any]:
    """One finding as `--output jsonl` prints it: a flat object whose keys are always in the same order."""
    return {
        "event_id": f.event_id, "rule": f.rule, "severity": f.severity.value, "shadow": f.shadow,
        "tier": f.tier.value, "approval_tier": f.approval_tier.value, "ts": f.ts.isoformat(), "agent": f.agent_id,
        "workflow": f.workflow, "session_id": f.session_id,
        "target": f.target, "title": f.title, "evidence": f.evidence,
    }
