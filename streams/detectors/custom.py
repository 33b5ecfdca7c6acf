"""Custom CEL rules from the matrix: a finding for every candidate rule whose condition holds and no exception does."""

from __future__ import annotations

import logging
from typing import Any

import cel

from streams.detectors.base import Context, RuleInfo, build_finding
from warden.contract import metrics
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.contract.redact import redact_text, redact_tree
from warden.policy.cel_samples import event_vars

log = logging.getLogger("warden.rules")


def target_of(ev: ActivityEvent) -> str:
    """What the event acted on: its tool, resource or identity target, else its kind."""
    if ev.tool is not None:
        return ev.tool.name
    if ev.resource is not None:
        return ev.resource.id
    if ev.identity_change is not None:
        return ev.identity_change.target
    return ev.kind.value


def detect(ctx: Context) -> list[Finding]:
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
