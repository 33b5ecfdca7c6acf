"""Custom CEL rules from the matrix: a finding for every candidate rule whose condition holds and no exception does,
and a `rule_error` finding when a rule cannot be evaluated (fail closed: never a silent no-match)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import cel

from streams.detectors.base import Context, RuleInfo, build_finding
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.contract.matrix import CustomRule, Severity
from warden.contract.redact import redact_text, redact_tree
from warden.policy.cel import RULE_ERROR as RULE_ERROR_ID
from warden.policy.cel_samples import event_vars
from warden.telemetry import metrics

log = logging.getLogger("warden.rules")

RULE_ERROR = RuleInfo(RULE_ERROR_ID, "A custom rule could not be evaluated", Severity.high, ("NIST-AI-RMF:MEASURE",))
# A rule that fails on many events is reported once per rule and interval (event time), not once per event.
RULE_ERROR_INTERVAL = timedelta(hours=1)


@dataclass
class RuleErrorTally:
    """One rule's evaluation errors: how many, the first (event and message), and when it was last reported."""

    count: int = 0
    first_event: str = ""
    error: str = ""
    reported_at: datetime | None = None
    since_report: int = 0


@dataclass
class RuleErrors:
    """Per custom rule id, its evaluation errors: the custom rules' state (bounded by the number of rules)."""

    by_rule: dict[str, RuleErrorTally] = field(default_factory=dict)

    def record(self, rule_id: str, event_id: str, ts: datetime, error: str) -> int | None:
        """Count one error; the number of errors to report when a `rule_error` finding is due now, else None."""
        tally = self.by_rule.setdefault(rule_id, RuleErrorTally(first_event=event_id, error=error))
        tally.count += 1
        tally.since_report += 1
        if tally.reported_at is not None and ts - tally.reported_at < RULE_ERROR_INTERVAL:
            return None
        due, tally.since_report, tally.reported_at = tally.since_report, 0, ts
        return due


def target_of(ev: ActivityEvent) -> str:
    """What the event acted on: its tool, resource or identity target, else its kind."""
    if ev.tool is not None:
        return ev.tool.name
    if ev.resource is not None:
        return ev.resource.id
    if ev.identity_change is not None:
        return ev.identity_change.target
    return ev.kind.value


def detect(ctx: Context, errors: RuleErrors | None = None) -> list[Finding]:
    """Every candidate rule's finding; a rule that raises is counted in `errors` and, once per rule and interval,
    raised as a `rule_error` finding (with no state, as on the approval path, every error is one)."""
    ev = ctx.event
    rules = ctx.policy.rules
    assert rules is not None
    candidates = rules.candidates(ev.kind.value, ev.tool.name if ev.tool is not None else None)
    if not candidates:
        return []  # most events stop here: no CEL context is built
    variables = {"event": event_vars(ev), "workflow": rules.workflow_vars(ctx.workflow_id, ctx.workflow)}
    # Converting a variable into CEL is most of the cost: pass `workflow` only when some candidate reads it.
    needed = variables if any(r.uses_workflow for r in candidates) else {"event": variables["event"]}
    context = cel.Context(variables=needed)
    findings: list[Finding] = []
    shown: dict[str, Any] | None = None  # the variables an output template quotes, redacted by structure once
    for compiled in candidates:
        rule = compiled.rule
        try:
            if not compiled.matches(context):
                continue
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # e.g. a field this event does not have
            metrics.RULE_EVAL_ERRORS.labels(rule=rule.id).inc()
            log.debug("rule %s did not evaluate on %s: %s", rule.id, ev.event_id, exc)
            error = _describe(exc)
            due = 1 if errors is None else errors.record(rule.id, ev.event_id, ev.ts, error)
            if due is not None:
                made = _rule_error(ctx, rule, error, due)
                if made is not None:
                    findings.append(made)
            continue
        output = ""
        if rule.output:
            if shown is None:
                # By structure before rendering: a dict renders as its repr, where a secret-ish key holding an object
                # (`'credentials': {'token': ...}`, common in tool results) hides the inner pair from the text pass.
                shown = {name: redact_tree(value) for name, value in variables.items()}
            output = redact_text(compiled.render(shown), 300)
        info = RuleInfo(rule.id, output or f"Custom rule {rule.id}", rule.severity, tuple(rule.frameworks))
        evidence = {"condition": rule.condition}
        if output:
            evidence["output"] = output
        finding = build_finding(ctx, info, target_of(ev), evidence, severity=rule.severity, mode=rule.mode,
                                tags=tuple(rule.tags))
        if finding:
            findings.append(finding)
    return findings


def _describe(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"no such key {text}" if isinstance(exc, KeyError) else text


def _rule_error(ctx: Context, rule: CustomRule, error: str, count: int) -> Finding | None:
    """A rule that could not be evaluated, told to the rule's owner; shadow when the rule is (it is being tuned)."""
    evidence = {"rule": rule.id, "error": error, "errors": str(count), "condition": rule.condition}
    return build_finding(ctx, RULE_ERROR, rule.id, evidence, mode=rule.mode, raise_agentic=False,
                         title=f"Custom rule {rule.id} could not be evaluated", owners=ctx.policy.rule_owners(
                             rule.owner))
