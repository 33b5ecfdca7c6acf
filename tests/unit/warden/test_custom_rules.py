"""Custom CEL rules: compiled once, indexed by kind and tool, with severity, tags, output, exceptions and shadow."""

from __future__ import annotations

from typing import Any

import pytest

from streams.detectors import DetectorState, detect
from tests.support.matrix_builder import ev, policy, tool
from tests.support.metrics import metric_value
from warden.contract.findings import Finding
from warden.contract.matrix import CustomRule
from warden.policy import Policy, PolicyError
from warden.policy.cel import compile_rules, index_hints
from warden.telemetry import metrics

REFUND = {
    "id": "large-refund",
    "condition": 'event.kind == "tool_call" && event.tool.name == "billing.refund" '
                 "&& double(event.tool.arguments.amount) > 500.0",
    "exceptions": ['has(event.principal) && event.principal == "svc:batch"'],
    "severity": "low",
    "tags": ["finance"],
    "frameworks": ["OWASP-LLM06"],
    "output": "Refund of ${event.tool.arguments.amount} in ${workflow.id} (${event.nope})",
}


def rules_policy(*rules: dict[str, Any]) -> Policy:
    return policy(rules={"custom": list(rules)})


def custom(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.rule not in ("unapproved_tool", "tool_burst", "retry_loop")]


def run(pol: Policy, *events: Any) -> list[Finding]:
    state = DetectorState()
    return custom([f for e in events for f in detect(e, pol, state)])


def refund(agent: str, amount: float, **fields: Any) -> Any:
    return tool(agent, "billing.refund", tool={"arguments": {"amount": amount}}, **fields)


def test_a_matching_rule_fires_with_its_severity_tags_frameworks_and_rendered_output() -> None:
    [f] = run(rules_policy(REFUND), refund("rag-bot", 900))
    assert (f.rule, f.severity.value, f.tags, f.frameworks) == ("large-refund", "low", ["finance"], ["OWASP-LLM06"])
    assert f.title == "Refund of 900 in research (${event.nope})"  # an unknown placeholder stays as written
    assert f.evidence["output"] == f.title
    assert f.owners.responder.id == "data-gov"


def test_a_custom_rule_is_raised_one_level_in_an_agentic_workflow() -> None:
    [f] = run(rules_policy(REFUND), refund("iam-agent", 900))
    assert f.severity.value == "medium"


def test_a_non_matching_event_does_not_fire() -> None:
    assert run(rules_policy(REFUND), refund("rag-bot", 100), tool("rag-bot", "billing.other")) == []


def test_an_exception_suppresses_the_rule() -> None:
    assert run(rules_policy(REFUND), refund("rag-bot", 900, principal="svc:batch")) == []
    assert len(run(rules_policy(REFUND), refund("rag-bot", 900, principal="human:amy"))) == 1


def test_a_shadow_rule_fires_marked_shadow() -> None:
    [f] = run(rules_policy({**REFUND, "mode": "shadow"}), refund("rag-bot", 900))
    assert f.shadow is True


def test_every_matching_rule_fires_no_first_match_wins() -> None:
    second = {"id": "any-refund", "condition": 'event.kind == "tool_call" && event.tool.name.startsWith("billing.")'}
    assert [f.rule for f in run(rules_policy(REFUND, second), refund("rag-bot", 900))] == ["large-refund", "any-refund"]


def test_a_rule_sees_the_resolved_workflow_and_null_for_an_unowned_agent() -> None:
    rule = {"id": "agentic-critical", "condition": 'workflow != null && workflow.mode == "agentic" '
                                                   '&& workflow.risk == "critical" && workflow.approver == "jordan"'}
    unowned = {"id": "no-owner", "condition": "workflow == null"}
    pol = rules_policy(rule, unowned)
    assert [f.rule for f in run(pol, ev("prompt", "iam-agent"))] == ["agentic-critical"]
    assert [f.rule for f in run(pol, ev("prompt", "rag-bot"))] == []
    assert [f.rule for f in run(pol, ev("prompt", "stray"))] == ["unowned_agent", "no-owner"]


def test_a_rule_that_errors_on_an_event_raises_a_rule_error_to_its_owner_and_is_counted() -> None:
    rule = {"id": "reads-missing-field", "condition": 'event.content.prompt.contains("x")'}
    before = metric_value(metrics.RULE_EVAL_ERRORS, rule="reads-missing-field")
    [f] = run(rules_policy(rule), ev("completion", "rag-bot"))
    assert (f.rule, f.target, f.shadow, f.severity.value) == ("rule_error", "reads-missing-field", False, "high")
    assert f.evidence["rule"] == "reads-missing-field" and "no such key" in f.evidence["error"]
    assert f.owners.responder.id == "secops"  # no owner named: the security owner, not the workflow's responder
    assert metric_value(metrics.RULE_EVAL_ERRORS, rule="reads-missing-field") == before + 1


def test_a_rule_error_goes_to_the_rule_owner_once_per_rule_and_interval_not_per_event() -> None:
    rule = {"id": "amount", "condition": 'event.kind == "tool_call" && double(event.tool.arguments.amount) > 1.0',
            "owner": "marco"}
    # A refund of "9e3x" used to skip the rule silently, event after event.
    bad = [tool("rag-bot", "billing.refund", m * 60.0, tool={"arguments": {"amount": "9e3x"}})
           for m in (0, 10, 59, 61, 62)]
    found = run(rules_policy(rule), *bad)
    assert [(f.rule, f.event_id, f.evidence["errors"]) for f in found] == [
        ("rule_error", bad[0].event_id, "1"), ("rule_error", bad[3].event_id, "3")]
    assert {f.owners.responder.id for f in found} == {"marco"}


def test_a_rule_owner_that_is_not_defined_is_a_lint_error() -> None:
    with pytest.raises(PolicyError, match="owner 'nobody' is referenced"):
        rules_policy({"id": "r", "condition": "true", "owner": "nobody"})


def test_the_credential_token_is_not_visible_to_rules() -> None:
    rule = {"id": "sees-token", "condition": "has(event.credential.token)"}
    e = ev("secret_access", "iam-agent", resource={"type": "secret", "id": "vault://iam/x"},
           credential={"id": "k", "token": "t0k3n"})
    assert run(rules_policy(rule), e) == []


# --- compile once, index by kind and tool ----------------------------------------------------------------------


def test_rules_are_compiled_once_per_policy_and_indexed_by_pinned_kind_and_tool() -> None:
    pol = rules_policy(REFUND, {"id": "prompts", "condition": 'event.kind in ["prompt", "completion"] && true'},
                       {"id": "anything", "condition": "true"})
    rules = pol.rules
    assert rules is not None
    def ids(kind: str, tool: str | None = None) -> list[str]:
        return [r.rule.id for r in rules.candidates(kind, tool)]

    assert ids("tool_call", "billing.refund") == ["large-refund", "anything"]
    assert ids("tool_call", "kb.search") == ["anything"]
    assert ids("prompt") == ["prompts", "anything"]
    assert ids("secret_access") == ["anything"]


@pytest.mark.parametrize(("condition", "kinds", "tools"), [
    ('event.kind == "tool_call"', {"tool_call"}, None),
    ('"prompt" == event.kind && size(event.content.prompt) > 3', {"prompt"}, None),
    ('event.kind == "tool_call" && event.tool.name in ["a.b", \'c\']', {"tool_call"}, {"a.b", "c"}),
    ('event.kind == "tool_call" || event.kind == "prompt"', None, None),  # a top-level || pins nothing
    ('event.kind == "tool_call" ? true : false', None, None),
    ('(event.kind == "tool_call" || true) && event.tool.name == "x"', None, {"x"}),
    ('event.x == "a && b || c" && event.kind == "approval"', {"approval"}, None),  # operators inside strings
    ("r'\\' || true || ' == event.x && event.kind == \"prompt\"", None, None),  # a raw string ends at its quote
    ('event.kind.startsWith("tool")', None, None),
])
def test_index_hints_only_pin_what_the_condition_requires(
    condition: str, kinds: set[str] | None, tools: set[str] | None
) -> None:
    assert index_hints(condition) == (
        frozenset(kinds) if kinds is not None else None, frozenset(tools) if tools is not None else None)


def test_compile_reports_located_issues_and_keeps_the_rules_that_compile() -> None:
    rules = [CustomRule(id="ok", condition="true"),
             CustomRule(id="syntax", condition="event.kind =="),
             CustomRule(id="var", condition='wf.mode == "chat"'),
             CustomRule(id="exc", condition="true", exceptions=["(("]),
             CustomRule(id="kind", condition='event.kind == "tool_cal"'),
             CustomRule(id="out", condition="true", output="${agent.id}")]
    compiled, issues = compile_rules(rules)
    assert [r.rule.id for r in compiled.rules] == ["ok", "kind", "out"]
    by_path = {".".join(p): reason for p, reason in issues}
    assert by_path["rules.custom.1.condition"].startswith("CEL does not compile")
    assert "unknown variable(s) ['wf']" in by_path["rules.custom.2.condition"]
    assert by_path["rules.custom.3.exceptions.0"].startswith("CEL does not compile")
    assert "'tool_cal'" in by_path["rules.custom.4.condition"]
    assert "${agent.id}" in by_path["rules.custom.5.output"]


def test_an_output_template_quoting_a_structured_tool_result_drops_secrets_nested_under_secret_keys() -> None:
    echo = {"id": "echo-result", "condition": 'event.kind == "tool_call" && has(event.tool.result)',
            "output": "Result ${event.tool.result}"}
    result = {"page": "hello", "credentials": {"token": "plantedtoolresult0013"}, "rows": [{"password": "pw0014x"}]}
    [f] = run(rules_policy(echo), tool("rag-bot", "web.fetch", tool={"result": result}))
    assert "hello" in f.title and "plantedtoolresult0013" not in f.title and "pw0014x" not in f.title
    assert f.evidence["output"] == f.title


# --- comments (issue 28) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "kinds", "tools"), [
    # A comment that once held a conjunct must not pin what the rule runs on ...
    ('event.kind == "tool_call" // was: && event.tool.name == "mail"\n&& event.tool.name in ["mail", "share"]',
     {"tool_call"}, {"mail", "share"}),
    ('event.kind == "tool_call" // was: && event.kind == "approval"\n&& true', {"tool_call"}, None),
    # ... nor hide a top-level `||` after it; and `//` inside a string is text, not a comment.
    ('event.kind == "prompt" // a note\n|| event.kind == "completion"', None, None),
    ('event.tool.name == "http://x" && event.kind == "tool_call"', {"tool_call"}, {"http://x"}),
])
def test_index_hints_ignore_comments(condition: str, kinds: set[str] | None, tools: set[str] | None) -> None:
    assert index_hints(condition) == (
        frozenset(kinds) if kinds is not None else None, frozenset(tools) if tools is not None else None)


def test_a_commented_out_conjunct_does_not_stop_the_rule_firing_on_other_tools() -> None:
    rule = {"id": "mail-or-share", "condition": 'event.kind == "tool_call" // was: && event.tool.name == "mail"\n'
                                                '&& event.tool.name in ["mail.x", "share.x"]'}
    assert [f.rule for f in run(rules_policy(rule), tool("rag-bot", "share.x"))] == ["mail-or-share"]


def test_an_apostrophe_in_a_comment_does_not_hide_a_macro_binding() -> None:
    condition = ('event.kind == "tool_call" // it\'s a mail\n'
                 '&& event.tool.arguments.to.exists(r, r.endsWith("@evil.example"))')
    assert compile_rules([CustomRule(id="c", condition=condition)])[1] == []


@pytest.mark.parametrize("setting", [{"enabled": False}, {"mode": "shadow"}])
def test_rule_errors_cannot_be_switched_off(setting: dict[str, Any]) -> None:
    with pytest.raises(PolicyError, match="rule_error cannot be disabled or put in shadow mode"):
        policy(rules={"builtin": {"rule_error": setting}, "custom": [REFUND]})


def test_the_severity_of_rule_errors_can_be_set() -> None:
    pol = policy(rules={"builtin": {"rule_error": {"severity": "critical"}},
                        "custom": [{"id": "r", "condition": 'event.content.prompt.contains("x")'}]})
    [f] = run(pol, ev("completion", "rag-bot"))
    assert (f.rule, f.severity.value) == ("rule_error", "critical")
