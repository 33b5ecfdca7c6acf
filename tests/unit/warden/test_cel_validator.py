"""The CEL rule validator accepts all of CEL the runtime evaluates (macros, type names) and rejects unknown
functions at lint time instead of failing on every event."""

from __future__ import annotations

import cel
import pytest

from streams.detectors import DetectorState, detect
from tests.support.matrix_builder import policy, tool
from warden.contract.matrix import CustomRule
from warden.policy.cel import FUNCTIONS, compile_rules

ALL_INTERNAL = ('event.kind == "tool_call" && event.tool.name == "mail.send" '
                '&& event.tool.arguments.to.all(r, r.endsWith("@example.com"))')


def issues(condition: str) -> list[str]:
    return [reason for _, reason in compile_rules([CustomRule(id="r", condition=condition)])[1]]


@pytest.mark.parametrize("condition", [
    ALL_INTERNAL,
    'event.tool.arguments.to.exists(r, r.startsWith("ceo@"))',
    "event.tool.arguments.to.exists_one(r, r == 'a')",
    "event.tool.arguments.to.map(r, size(r)).filter(n, n > 40).size() > 0",
    "type(event.tool.arguments.to) == list && type(event.tool.arguments) == map",
    # (event.attributes: a field the contract does not have raises on every event, which the lint reports)
    "type(event.attributes.x) == string || type(event.attributes.x) == int || type(event.attributes.x) == null_type",
    'has(event.tool) && timestamp(event.ts).getHours() > 20 && duration("1h") > duration("1m")',
    "optional.of(1).hasValue()",  # optional values evaluate in the runtime (issue 28)
    "optional.ofNonZeroValue(event.tool.name).or(optional.none()).orValue('') != ''",
])
def test_macros_and_type_names_are_accepted(condition: str) -> None:
    assert issues(condition) == []


@pytest.mark.parametrize(("condition", "reason"), [
    ("event.tool.arguments.to.exists(r, x > 1)", "unknown variable(s) ['x']"),
    ("request.size > 1", "unknown variable(s) ['request']"),
    ('event.tool.name.lowerAscii() == "x"', "unknown function(s) ['lowerAscii']"),
    ("is_external(event.tool.arguments.to)", "unknown function(s) ['is_external']"),
    ('event.x == ".all(y, true)" && y', "unknown variable(s) ['y']"),  # a macro inside a string binds nothing
])
def test_unknown_variables_and_functions_are_caught_at_lint(condition: str, reason: str) -> None:
    [found] = issues(condition)
    assert reason in found


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_the_lint_accepts_evaluates_in_the_runtime(name: str) -> None:
    sample = {
        "size": "size('ab')", "int": "int('1')", "uint": "uint(1)", "double": "double(1)", "string": "string(1)",
        "bytes": "bytes('a')", "type": "type(1)", "dyn": "dyn(1)", "duration": "duration('1s')",
        "timestamp": "timestamp('2026-01-01T00:00:00Z')", "matches": "'a'.matches('a')",
        "contains": "'ab'.contains('a')", "startsWith": "'ab'.startsWith('a')", "endsWith": "'ab'.endsWith('b')",
        "of": "optional.of(1)", "none": "optional.none()", "ofNonZeroValue": "optional.ofNonZeroValue(1)",
        "hasValue": "optional.of(1).hasValue()", "value": "optional.of(1).value()",
        "orValue": "optional.none().orValue(1)", "or": "optional.none().or(optional.of(1))",
    }.get(name, f"timestamp('2026-01-01T00:00:00Z').{name}()")
    program = cel.compile(sample)
    assert name in program.functions()
    program.execute(cel.Context(variables={}))  # raises for a function the runtime lacks


def test_a_macro_rule_fires_on_the_event_it_describes() -> None:
    rule = {"id": "outside-mail", "condition": ALL_INTERNAL.replace(".all(", ".exists(").replace(
        'r.endsWith("@example.com")', '!r.endsWith("@example.com")')}
    pol = policy(rules={"custom": [rule]})

    def fired(to: list[str]) -> bool:
        event = tool("rag-bot", "mail.send", tool={"arguments": {"to": to}})
        return any(f.rule == "outside-mail" for f in detect(event, pol, DetectorState()))

    assert fired(["a@example.com", "b@evil.example.net"])
    assert not fired(["a@example.com"])


# --- rules that raise on every event are lint errors (issue 28) --------------------------------------------------


@pytest.mark.parametrize("condition", [
    'event.kind == "tool_call" && timestamp(event.ts).getHours("Europe/Paris") > 20',
    'event.kind == "tool_call" && int(timestamp(event.ts)) > 0',
    '"abc"[0] == "a"',
    'event.kind == "prompt" && event.content.prompt[0] == "a"',
])
def test_a_condition_that_raises_on_every_sample_event_is_a_lint_error(condition: str) -> None:
    [found] = issues(condition)
    assert "raises on every sample event it can match" in found


def test_an_exception_that_raises_on_every_sample_event_is_a_located_lint_error() -> None:
    rule = CustomRule(id="r", condition="true", exceptions=['"abc"[0] == "a"'])
    [(path, reason)] = compile_rules([rule])[1]
    assert path == ("rules", "custom", "0", "exceptions", "0") and "raises on every sample event" in reason


@pytest.mark.parametrize("condition", [
    # The free-form maps are tried with each JSON type: a value that may be a number, a list or a string is fine.
    'event.kind == "tool_call" && double(event.tool.arguments.amount) > 500.0',
    'event.tool.arguments.to.exists(r, r.endsWith("@x.example")) && size(event.tool.arguments.to) > 0',
    'int(event.attributes.retries) > 2 && event.tool.arguments.note.contains("x")',
    'type(event.tool.result) == map && event.tool.result.rows > 1',
    # The workflow variable is tried null and as each workflow.
    'workflow.mode == "agentic" && workflow.risk == "critical"',
    'timestamp(event.ts).getHours() > 20 && event.kind == "approval" && event.approval.decision == "approved"',
    'event.kind == "identity_change" && event.identity_change.target.startsWith("user:")',
    'event.resource.classification == "restricted" && event.credential.issuer != ""',
    'size(event.agent.name) > 0 && event.outcome.status == "ok" && event.content.output != ""',
])
def test_a_condition_that_evaluates_on_some_event_passes_the_lint(condition: str) -> None:
    assert issues(condition) == []
