"""Typed sample events, so the lint can tell a rule that can never evaluate from one whose result depends on the event.

A condition such as `timestamp(event.ts).getHours("Europe/Paris")` or `"abc"[0]` compiles, then raises on every
event at run time. The lint runs each program on sample events of every kind the rule can match, each field filled
with a plausible value of its type, and the free-form maps (`tool.arguments`, `tool.result`, `attributes`) given
the paths the rule reads with each JSON type in turn. A program that raises on every sample is an error; one that
evaluates on any sample is left to run time (where an error is a `rule_error` finding, never a silent no-match).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

import cel

from warden.contract.events import ActivityEvent, Kind

# The JSON types a value the rule reads from a free-form map may have; one sample per combination (capped).
_VARIANTS: tuple[Any, ...] = ("sample", 2, 2.5, True, ["sample"], {"sample": "sample"})
_MAX_COMBINATIONS = 256
MAX_TRIES = 4096  # evaluations per program at most: a few milliseconds, whatever the matrix size
_FREE_FORM = {"tool.arguments": ("tool", "arguments"), "tool.result": ("tool", "result"),
              "attributes": ("attributes",)}
_READS = re.compile(r"\bevent\.(tool\.arguments|tool\.result|attributes)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_SAMPLE_TOOL = "sample.tool"


def event_vars(ev: ActivityEvent) -> dict[str, Any]:
    """The `event` CEL variable: the event as JSON, absent fields omitted (so `has()` works), token removed."""
    return ev.model_dump(mode="json", exclude_none=True, exclude={"credential": {"token"}})


@cache
def _base(kind: str, tool: str) -> dict[str, Any]:
    """An event of `kind` with every optional part present, as the runtime's `event` variable shows it."""
    return event_vars(ActivityEvent.model_validate({
        "event_id": "sample-1", "ts": "2026-01-05T09:30:00Z", "kind": kind,
        "agent": {"id": "sample-agent", "name": "Sample agent"}, "workflow": "sample", "session_id": "sess-1",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "principal": "user:sample",
        "tool": {"name": tool, "call_id": "call-1", "arguments": {}, "result": "sample"},
        "resource": {"type": "dataset", "id": "s3://sample/object", "classification": "internal"},
        "credential": {"id": "key-1", "issuer": "https://idp.example.com"},
        "identity_change": {"operation": "grant_role", "target": "user:sample", "entitlement": "viewer"},
        "approval": {"approver": "sample", "decision": "approved", "ref": "sample-0"},
        "outcome": {"status": "ok", "error": "sample"},
        "content": {"prompt": "sample", "output": "sample"},
    }))


def samples(source: str, kinds: frozenset[str] | None, tools: frozenset[str] | None) -> Iterator[dict[str, Any]]:
    """Sample `event` variables for a rule: each kind and pinned tool it can match, times typed values for the
    free-form paths its source reads (`source` without comments and strings: see `cel.code_only`)."""
    reads = sorted({(m.group(1), tuple(m.group(2)[1:].split("."))) for m in _READS.finditer(source)})
    leaves = [r for r in reads if not any(o[0] == r[0] and o[1][:len(r[1])] == r[1] and o != r for o in reads)]
    combos = itertools.islice(itertools.product(_VARIANTS, repeat=len(leaves)), _MAX_COMBINATIONS)
    typed = list(combos)
    for kind in sorted(kinds if kinds is not None else {k.value for k in Kind}):
        for tool in sorted(tools) if tools else [_SAMPLE_TOOL]:
            base = _base(kind, tool)
            for values in typed:
                event = _copy(base)
                for (where, path), value in zip(leaves, values, strict=True):
                    _put(event, (*_FREE_FORM[where], *path), value)
                yield event


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _put(event: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = event
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def never_evaluates(program: cel.Program, source: str, kinds: frozenset[str] | None, tools: frozenset[str] | None,
                    workflows: Sequence[Mapping[str, Any] | None]) -> str | None:
    """The error of the first sample when `program` raises on every sample event (and every workflow); None as
    soon as one sample evaluates, or when MAX_TRIES samples did not settle it (the lint then gives the benefit of
    the doubt: the run time still reports a `rule_error`)."""
    first: str | None = None
    tries = 0
    choices = workflows if "workflow" in source else [None]
    for event in samples(source, kinds, tools):
        for workflow in choices:
            tries += 1
            if tries > MAX_TRIES:
                return None
            try:
                program.execute(cel.Context(variables={"event": event, "workflow": workflow}))
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                first = first or _one_line(exc)
                continue
            return None
    return first


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        text = f"no such key {text}"
    return text if len(text) <= 200 else text[:200] + "…"
