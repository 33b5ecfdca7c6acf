"""retry_loop: the same tool with the same arguments called more than N times in a session (ASI08, LLM10)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import orjson

from streams.detectors.base import Context, RuleInfo, build_finding
from streams.detectors.windows import WindowCounter
from warden.contract.events import Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Severity, Workflow

info = RuleInfo(
    id="retry_loop",
    title="Agent is repeating an identical tool call",
    default_severity=Severity.medium,
    frameworks=("OWASP-ASI08", "OWASP-LLM10", "NIST-AI-RMF:MANAGE"),
)


new_state = WindowCounter


def lookback(workflow: Workflow) -> timedelta:
    """The identical-retry window: how far back the counter needs the workflow's events."""
    limit = workflow.scope.limits.identical_retries
    return limit.window if limit is not None else timedelta(0)


_SORTED = orjson.OPT_SORT_KEYS
# json, for what orjson refuses (an integer beyond 64 bits); the same canonical form: sorted keys, no spaces.
_FALLBACK = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
_INLINE = 64  # a canonical form up to this many bytes is its own window key; a longer one is keyed by its digest


def canonical(arguments: dict[str, object] | None) -> bytes:
    """The arguments as compact JSON with sorted keys: equal for equal arguments, whatever their key order."""
    try:
        return orjson.dumps(arguments or {}, option=_SORTED, default=str)
    except orjson.JSONEncodeError:
        return _FALLBACK.encode(arguments or {}).encode()


def detect(ctx: Context, state: WindowCounter) -> list[Finding]:
    """Keyed by session; an event without a session id is keyed by its agent instead."""
    ev = ctx.event
    if ev.kind is not Kind.tool_call or ev.tool is None or ctx.workflow is None:
        return []
    limit = ctx.workflow.scope.limits.identical_retries
    if limit is None:
        return []
    form = canonical(ev.tool.arguments)  # the digest only when it fires: most calls never repeat
    # Kept in the window: a copy as text (orjson's bytes keep a 4 KB allocation each, measured: 100k keys were
    # 380 MB), or the digest of a long form, so that keys stay small whatever the call.
    same = form.decode() if len(form) <= _INLINE else hashlib.sha256(form).digest()
    session = ev.session_id or f"agent:{ev.agent.id}"
    if not state.hit((ev.agent.id, session, ev.tool.name, same), ev.ts, limit, ev.event_id):
        return []
    evidence = {
        "tool": ev.tool.name,
        "arguments_sha256": hashlib.sha256(form).hexdigest()[:16],
        "session": ev.session_id or "(none: keyed by agent)",
        "limit": f"more than {limit.max} identical calls within {limit.window}",
    }
    finding = build_finding(ctx, info, ev.tool.name, evidence)
    return [finding] if finding else []
