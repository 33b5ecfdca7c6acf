"""retry_loop: the same tool with the same arguments called more than N times in a session (ASI08, LLM10)."""

from __future__ import annotations

import hashlib
import json

from streams.detectors.base import Context, RuleInfo, build_finding
from streams.detectors.windows import WindowCounter
from warden.contract.events import Kind
from warden.contract.findings import Finding
from warden.contract.matrix import Severity

info = RuleInfo(
    id="retry_loop",
    title="Agent is repeating an identical tool call",
    default_severity=Severity.medium,
    frameworks=("OWASP-ASI08", "OWASP-LLM10", "NIST-AI-RMF:MANAGE"),
)


new_state = WindowCounter


# Built once: `json.dumps` with these options builds a new encoder per call (2.5-3.7 µs); the same bytes in 1.8 µs.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def arguments_hash(arguments: dict[str, object] | None) -> str:
    """A stable hash of the arguments (key order does not matter)."""
    return hashlib.sha256(_CANONICAL.encode(arguments or {}).encode()).hexdigest()[:16]


def detect(ctx: Context, state: WindowCounter) -> list[Finding]:
    """Keyed by session; an event without a session id is keyed by its agent instead."""
    ev = ctx.event
    if ev.kind is not Kind.tool_call or ev.tool is None or ctx.workflow is None:
        return []
    limit = ctx.workflow.scope.limits.identical_retries
    if limit is None:
        return []
    digest = arguments_hash(ev.tool.arguments)
    session = ev.session_id or f"agent:{ev.agent.id}"
    if not state.hit((ev.agent.id, session, ev.tool.name, digest), ev.ts, limit, ev.event_id):
        return []
    evidence = {
        "tool": ev.tool.name,
        "arguments_sha256": digest,
        "session": ev.session_id or "(none: keyed by agent)",
        "limit": f"more than {limit.max} identical calls within {limit.window}",
    }
    finding = build_finding(ctx, info, ev.tool.name, evidence)
    return [finding] if finding else []
