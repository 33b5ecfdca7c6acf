"""provenance: a sensitive call whose argument value came only from untrusted output (ASI01, LLM01).

A hijack that stays inside the policy (a payment with an allowed tool to a payee of the right shape, a message in
an allowed channel) still leaves one trace: the value it sends was read in a web page, an e-mail or a file the
agent fetched, and never in the user's request. For a call in one of the workflow's `provenance.sensitive`
categories, every argument value, whole and as extracted tokens (warden/policy/values.py), is looked up in the
session's fingerprints (provenance_state.py): a value held by an untrusted result (or put together from pieces of
untrusted results), and by neither the request, a trusted tool's result nor the policy's own lists and constraints,
is a `provenance` finding naming the argument, the redacted value and the result it came from. A typed value
(address, URL, host, IBAN, number) found nowhere the session read is `unsourced_value`: the model made it up.

A call's own result is read after its arguments are judged: it cannot ground them. Results of other tools count
only against `unsourced_value`. The tier (page, review, log; hold on the approval path) is the matrix's
(warden/policy/tiers.py): provenance alone also fires on legitimate work, so by default it pages only on payment
and identity_admin calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from streams.detectors.base import Context, RuleInfo, build_finding
from streams.detectors.provenance_state import Origin, ProvenanceLedger, Session, fingerprint
from warden.contract.events import Kind
from warden.contract.findings import Finding
from warden.contract.matrix import BuiltinRule, Category, RuleMode, Severity, Tier, Workflow
from warden.contract.redact import redact_value
from warden.policy.provenance import ProvenanceChecks
from warden.policy.tiers import PROVENANCE, UNSOURCED_VALUE
from warden.policy.values import MIN_PIECE, leaves, read_values, split_value, tokens, whole

FRAMEWORKS = ("OWASP-ASI01", "OWASP-LLM01", "NIST-AI-RMF:MANAGE")
info = RuleInfo(
    id=PROVENANCE,
    title="Sensitive call with a value that came only from untrusted output",
    default_severity=Severity.high,
    frameworks=FRAMEWORKS,
)
UNSOURCED = RuleInfo(
    id=UNSOURCED_VALUE,
    title="Sensitive call with a value found nowhere the session read",
    default_severity=Severity.medium,
    frameworks=FRAMEWORKS,
)
also = (UNSOURCED,)  # the other rule this module raises: configured under rules.builtin like any built-in
new_state = ProvenanceLedger


def lookback(workflow: Workflow) -> timedelta:
    """The provenance window: how long a session's reads ground its later calls."""
    return workflow.provenance.within
MAX_LISTED = 3
# Values that name a destination or a thing to act on, wherever they stand in an argument (a mail body, a command).
_TYPED = frozenset({"email", "url", "host", "iban", "number", "path", "env"})
_NONE: frozenset[Category] = frozenset()
_REQUESTS = frozenset({Kind.prompt, Kind.completion, Kind.agent_invoke})


def session_key(agent_id: str, session_id: str | None) -> tuple[str, str]:
    """A session's key in the ledger: events without a session id share one per agent."""
    return (agent_id, session_id or f"agent:{agent_id}")


def judge_call(ctx: Context, session: Session | None) -> list[Finding]:
    """The provenance findings of a call about to be made (the approval path), against what its session read."""
    ev, checks = ctx.event, ctx.checks
    if checks is None or ev.tool is None or not ev.tool.arguments or not _traced(ctx, checks.provenance):
        return []
    return _judge(ctx, checks.provenance, session, ev.tool.arguments)


def _traced(ctx: Context, prov: ProvenanceChecks) -> bool:
    """The call's tool is in one of the workflow's sensitive categories: its values are traced."""
    return ctx.tool is not None and bool(ctx.tool.categories & prov.sensitive)


def traced(ctx: Context) -> bool:
    """A call with arguments whose values provenance would judge, with the `provenance` rule on and a tier that
    holds or pages on the approval path for it."""
    ev, checks = ctx.event, ctx.checks
    if checks is None or ev.tool is None or not ev.tool.arguments or not _traced(ctx, checks.provenance):
        return False
    cfg = ctx.policy.matrix.rules.builtin.get(PROVENANCE)
    if cfg is not None and (not cfg.enabled or cfg.mode is RuleMode.shadow):
        return False
    assert ctx.tool is not None
    tiers = ctx.policy.tiers_for(PROVENANCE, ctx.tool.categories, ctx.workflow_id)
    return tiers.approval in (Tier.page, Tier.hold)


def detect(ctx: Context, ledger: ProvenanceLedger) -> list[Finding]:
    ev, checks = ctx.event, ctx.checks
    if checks is None:  # an unowned agent: no workflow, nothing to trace
        return []
    prov = checks.provenance
    call = ev.tool
    if call is None:  # a prompt event; over OTLP a chat or invoke_agent span carries the user's request too
        if ev.content is not None and ev.content.prompt and ev.kind in _REQUESTS:
            session = ledger.session(session_key(ev.agent.id, ev.session_id), ev.ts, prov.within)
            ledger.add(session, "trusted", _grounding(read_values(ev.content.prompt)), (),
                       Origin(ev.event_id, "request"))
        return []
    sensitive = bool(call.arguments) and _traced(ctx, prov)
    if not sensitive and call.result is None:  # the common case: nothing to judge, nothing read
        return []
    key = session_key(ev.agent.id, ev.session_id)
    findings: list[Finding] = []
    if sensitive and ev.kind is Kind.tool_call and ledger:
        findings = _judge(ctx, prov, ledger.get(key), call.arguments or {})
    if call.result is not None:
        session = ledger.session(key, ev.ts, prov.within)
        source = prov.source(call.name, ctx.tool.categories if ctx.tool is not None else _NONE)
        pieces: set[str] = set()
        values = read_values(call.result, pieces if source == "untrusted" else None)
        if source == "trusted":
            values = _grounding(values)
        ledger.add(session, source, values, pieces, Origin(ev.event_id, call.name))
    return findings


def _judge(ctx: Context, prov: ProvenanceChecks, session: Session | None,
           arguments: Mapping[str, Any]) -> list[Finding]:
    """The call's findings against its session's fingerprints: none for a session Warden saw no request and no
    result of (producers that send neither judge as before)."""
    if session is None:
        return []
    rules = ctx.policy.matrix.rules.builtin
    untrusted: list[tuple[str, str, list[Origin], bool, str]] = []  # (argument, value, origins, split, matched)
    unsourced: list[tuple[str, str]] = []
    unsourced_paths: set[str] = set()
    for path, leaf in leaves(arguments):
        for value in sorted(_candidates(leaf)):  # sorted: the same call names the same value every time
            if prov.names(value):
                continue
            fp = fingerprint(value)
            if fp in session.trusted or _trusted_tail(value, session) or _trusted_run(value, session):
                continue
            origin = session.untrusted.get(fp)
            parts = [origin] if origin is not None else _split(value, session) if session.pieces else None
            if parts:
                untrusted.append((path, leaf, parts, origin is None, value))
                break  # one value per argument is enough to name it
            if value.partition(":")[0] in _TYPED and fp not in session.other and path not in unsourced_paths:
                unsourced.append((path, leaf))
                unsourced_paths.add(path)
    findings = []
    if untrusted and _enabled(rules.get(PROVENANCE)):
        finding = _untrusted_finding(ctx, untrusted)
        if finding is not None:
            findings.append(finding)
    if unsourced and not untrusted and _enabled(rules.get(UNSOURCED_VALUE)):
        finding = _unsourced_finding(ctx, unsourced)
        if finding is not None:
            findings.append(finding)
    return findings


def _grounding(values: set[str]) -> set[str]:
    """Trusted values, with the letters and digits of each IBAN, number and id: they ground every form of it."""
    return values | {f"run:{run}" for v in values if (run := split_value(v)) is not None}


def _trusted_run(value: str, session: Session) -> bool:
    """An IBAN, number or id the request wrote in another form (`DE89 3704 …` grounds `de89370…` as an id too)."""
    run = split_value(value)
    return run is not None and fingerprint(f"run:{run}") in session.trusted


def _trusted_tail(value: str, session: Session) -> bool:
    """A path whose tail the request named (`src/app.py` grounds `/workspace/src/app.py`)."""
    kind, _, path = value.partition(":")
    if kind != "path":
        return False
    parts = [p for p in path.split("/") if p]
    tails = ["path:" + "/".join(parts[i:]) for i in range(1, len(parts))]
    if parts:
        tails.append("ident:" + parts[-1].lower())
    return any(fingerprint(t) in session.trusted for t in tails)


def _enabled(cfg: BuiltinRule | None) -> bool:
    return cfg is None or cfg.enabled


def _candidates(leaf: str) -> set[str]:
    """The values of one argument: the whole of a short one, and the addresses, URLs, hosts, IBANs, numbers, paths
    and environment variables in it. Names and ids count only as a whole single-word value: in free text (a mail
    body summarising what the agent read) they are the expected echo of its reading, not a destination."""
    one = whole(leaf)
    single = one is not None and " " not in one
    found = {v for v in tokens(leaf) if single or v.partition(":")[0] in _TYPED}
    if one is not None:
        found.add(one)
    return found


def _split(value: str, session: Session) -> list[Origin] | None:
    """The untrusted results a value was put together from, when it splits into two or more pieces each read in
    one (pieces of at least MIN_PIECE characters, the last of at least two), else None."""
    run = split_value(value)
    if run is None:
        return None
    n = len(run)
    best: list[list[Origin] | None] = [None] * (n + 1)  # best[i]: origins of a cover of run[:i]
    best[0] = []
    for i in range(n):
        covered = best[i]
        if covered is None:
            continue
        for j in range(i + 2, n + 1):
            if j - i < MIN_PIECE and j != n:
                continue
            if j - i == n:
                continue  # the whole run as one piece is a whole value, judged as such
            origin = session.pieces.get(fingerprint("piece:" + run[i:j]))
            if origin is not None and best[j] is None:
                best[j] = [*covered, origin]
    return best[n] if best[n] else None


def _untrusted_finding(ctx: Context, hits: list[tuple[str, str, list[Origin], bool, str]]) -> Finding | None:
    ev = ctx.event
    assert ev.tool is not None
    path, value, origins, split, matched = hits[0]
    kind, _, normal = matched.partition(":")
    evidence = {
        "tool": ev.tool.name,
        "argument": path,
        "value": redact_value(value, 200),
        "matched": f"{kind} {redact_value(normal, 200)}",
        "read_in": ", ".join(dict.fromkeys(f"{o.tool} ({o.event_id})" for o in origins)),
        "request": "did not contain it",
    }
    if split:
        evidence["split"] = f"put together from {len(origins)} pieces of untrusted output"
    more = [f"{p}={redact_value(v, 80)}" for p, v, *_ in hits[1:MAX_LISTED]]
    if more:
        evidence["also"] = "; ".join(more)
    if len(hits) > MAX_LISTED:
        evidence["and_more"] = str(len(hits) - MAX_LISTED)
    return build_finding(ctx, info, f"{ev.tool.name}:{path}", evidence)


def _unsourced_finding(ctx: Context, hits: list[tuple[str, str]]) -> Finding | None:
    ev = ctx.event
    assert ev.tool is not None
    path, value = hits[0]
    evidence = {"tool": ev.tool.name, "argument": path, "value": redact_value(value, 200),
                "read_in": "nothing this session read: not the request, no tool result"}
    more = [f"{p}={redact_value(v, 80)}" for p, v in hits[1:MAX_LISTED]]
    if more:
        evidence["also"] = "; ".join(more)
    return build_finding(ctx, UNSOURCED, f"{ev.tool.name}:{path}", evidence, rule_id=UNSOURCED.id)
