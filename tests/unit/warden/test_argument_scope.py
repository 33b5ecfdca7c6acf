"""argument_out_of_scope: each constraint kind fires on a bad value and stays quiet on a good one."""

from __future__ import annotations

from typing import Any

import pytest

from streams.detectors import DetectorState, detect
from tests.support.matrix_builder import tool
from tests.support.scope_builder import scoped
from warden.contract.findings import Finding
from warden.policy import Policy
from warden.policy.arguments import NON_FINITE, compile_constraint

POLICY = scoped()


def arg_findings(pol: Policy, name: str, arguments: dict[str, Any], agent: str = "iam-agent") -> list[Finding]:
    found = detect(tool(agent, name, tool={"arguments": arguments}), pol, DetectorState())
    return [f for f in found if f.rule == "argument_out_of_scope"]


@pytest.mark.parametrize(("name", "arguments"), [
    ("pay", {"payee": "acme", "amount": 10}),
    ("pay", {"payee": "newco", "amount": 1000, "memo": "march"}),
    ("mail.send", {"to": ["a@example.com", "b@eu.example.com"]}),
    ("mail.send", {"to": []}),
    ("web.get", {"url": "https://www.example.com/x"}),
    ("web.get", {"url": "about:blank"}),              # anyOf: the second branch
    ("web.get", {}),                                  # not required
    ("directory.grant_role", {"user": "u", "role": "viewer"}),
    ("directory.lookup_user", {"anything": True}),    # no constraint on this tool
])
def test_arguments_within_the_constraints_raise_nothing(name: str, arguments: dict[str, Any]) -> None:
    assert arg_findings(POLICY, name, arguments) == []


@pytest.mark.parametrize(("name", "arguments", "path", "constraint"), [
    ("pay", {"payee": "acme"}, "(arguments)", 'required: ["payee", "amount"]'),
    ("pay", {"payee": "Acme Ltd", "amount": 5}, "payee", 'pattern: "^[a-z]+$"'),
    ("pay", {"payee": "acme", "amount": 1001}, "amount", "maximum: 1000"),
    ("pay", {"payee": "acme", "amount": 0}, "amount", "minimum: 1"),
    ("pay", {"payee": "acme", "amount": "10"}, "amount", 'type: "number"'),
    ("pay", {"payee": "acme", "amount": 5, "memo": "x" * 11}, "memo", "maxLength: 10"),
    ("mail.send", {"to": ["a@example.com", "Eve <e@evil.example.net>"]}, "to.1", "email_domain_in: company"),
    ("mail.send", {"to": "a@example.com"}, "to", 'type: "array"'),
    ("web.get", {"url": "https://example.com@evil.example.net/"}, "url", "anyOf"),
    ("directory.grant_role", {"user": "u", "role": "domain-admins"}, "role", "in_list: roles"),
])
def test_each_broken_constraint_is_one_finding_naming_tool_path_and_constraint(
        name: str, arguments: dict[str, Any], path: str, constraint: str) -> None:
    [f] = arg_findings(POLICY, name, arguments)
    assert f.evidence["tool"] == name
    assert f.evidence["argument"] == path
    assert f.evidence["constraint"].startswith(constraint)
    assert f.target == f"{name}:{path}"
    assert f.frameworks[:2] == ["OWASP-ASI02", "OWASP-LLM06"]
    assert f.severity.value == "critical"  # high, raised one level in an agentic workflow


@pytest.mark.parametrize("amount", [float("inf"), float("-inf"), float("nan")])
def test_infinity_and_nan_never_pass_a_numeric_bound(amount: float) -> None:
    [f] = arg_findings(POLICY, "pay", {"payee": "acme", "amount": amount})
    assert (f.evidence["argument"], f.evidence["constraint"]) == ("amount", NON_FINITE)
    assert arg_findings(POLICY, "pay", {"payee": "acme", "amount": 5, "memo": "ok", "x": [{"y": 1.5}]}) == []


def test_the_value_is_redacted_and_the_constraint_never_quotes_it() -> None:
    [f] = arg_findings(POLICY, "pay", {"payee": "token=sk-live-abcdefghijklmnopqrstu", "amount": 1})
    assert "sk-live-abcdefghijklmnopqrstu" not in str(f.evidence)
    assert f.evidence["value"] == "token=[REDACTED]"


def test_several_violations_are_listed_in_one_finding() -> None:
    [f] = arg_findings(POLICY, "pay", {"payee": "X", "amount": 0, "memo": "y" * 20})
    assert f.evidence["violations"].count(";") == 2


SHORT = scoped({"arguments": {"pay": {"properties": {k: {"maxLength": 1} for k in "abcde"}}}})


@pytest.mark.parametrize(("broken", "listed"), [
    (1, None),  # the one violation is the finding's argument and constraint: no list
    (2, "a: maxLength: 1; b: maxLength: 1"),
    (3, "a: maxLength: 1; b: maxLength: 1; c: maxLength: 1"),
    (4, "a: maxLength: 1; b: maxLength: 1; c: maxLength: 1; … (+1 more)"),
    (5, "a: maxLength: 1; b: maxLength: 1; c: maxLength: 1; … (+2 more)"),
])
def test_up_to_three_violations_are_spelled_out_and_the_rest_counted(broken: int, listed: str | None) -> None:
    [f] = arg_findings(SHORT, "pay", {k: "too long" for k in "abcde"[:broken]})
    assert (f.evidence["argument"], f.evidence["constraint"]) == ("a", "maxLength: 1")
    assert f.evidence.get("violations") == listed


def test_a_workflow_extends_a_top_level_list() -> None:
    pol = scoped(workflow={"lists": {"company": ["partner.example.net"], "roles": ["editor"]}})
    assert arg_findings(pol, "mail.send", {"to": ["p@partner.example.net"]}) == []
    assert arg_findings(pol, "directory.grant_role", {"role": "editor"}) == []
    assert arg_findings(pol, "directory.grant_role", {"role": "viewer"}) == []  # the top-level entries stay
    assert arg_findings(POLICY, "mail.send", {"to": ["p@partner.example.net"]}) != []  # only that workflow


def test_a_keyword_inside_properties_is_a_property_name_not_a_keyword() -> None:
    pol = scoped({"arguments": {"pay": {"properties": {"in_list": {"type": "string"}}}}})
    assert arg_findings(pol, "pay", {"in_list": "anything"}) == []
    assert len(arg_findings(pol, "pay", {"in_list": 3})) == 1


def test_an_unowned_agent_is_not_checked_against_any_workflow() -> None:
    assert arg_findings(POLICY, "pay", {"payee": "X"}, agent="stranger") == []


def test_infinity_deep_in_a_list_is_found_with_its_path() -> None:
    [f] = arg_findings(POLICY, "pay", {"payee": "acme", "amount": 5, "x": [{"y": 1.5}, {"y": float("inf")}]})
    assert (f.evidence["argument"], f.evidence["constraint"]) == ("x.1.y", NON_FINITE)


@pytest.mark.parametrize(("length", "quoted"), [(120, "as written"), (121, "cut at 120 characters")])
def test_a_constraint_is_quoted_whole_up_to_120_characters(length: int, quoted: str) -> None:
    choice = "a" * (length - 4)  # json.dumps(["aaa…"]) adds four characters
    check, issues = compile_constraint({"properties": {"x": {"enum": [choice]}}}, {}, ("w",))
    assert check is not None and issues == []
    [v] = check.violations({"x": "other"})
    shown = '["' + choice + '"]'
    assert v.constraint == ("enum: " + shown if length <= 120 else "enum: " + shown[:120] + "…"), quoted


def test_an_unknown_list_is_an_issue_naming_the_lists_there_are() -> None:
    check, issues = compile_constraint({"properties": {"to": {"in_list": "payes"}}}, {"payees": ["acme"]}, ("w",))
    assert check is None
    assert issues == [(("w", "properties", "to", "in_list"), "unknown list 'payes' (lists: payees)")]


@pytest.mark.parametrize("written", [{"type": "string", "const": "root"}, {"const": "root", "type": "string"}])
def test_a_constraint_quoted_from_an_object_lists_its_keys_sorted_whatever_order_they_were_written_in(
        written: dict[str, str]) -> None:
    """The same constraint reads the same in every finding, however the policy's author ordered its keys."""
    check, issues = compile_constraint({"properties": {"user": {"not": written}}}, {}, ("w",))
    assert check is not None and issues == []
    [v] = check.violations({"user": "root"})
    assert (v.path, v.constraint) == ("user", 'not: {"const": "root", "type": "string"}')


@pytest.mark.parametrize(("schema", "arguments", "constraint"), [
    ({"properties": {"to": {"anyOf": [{"in_list": "contacts"}, {"const": "ops@example.com"}]}}},
     {"to": "evil@example.net"}, 'anyOf: [{"in_list": "contacts"}, {"const": "ops@example.com"}]'),
    ({"properties": {"to": {"not": {"in_list": "contacts"}}}}, {"to": "ana@example.com"},
     'not: {"in_list": "contacts"}'),
])
def test_a_constraint_quotes_a_named_list_by_name_never_its_entries(
    schema: dict[str, Any], arguments: dict[str, Any], constraint: str
) -> None:
    """Issue 28: a violation found above the list keyword (anyOf, not) expanded the whole list into the evidence."""
    from warden.policy.arguments import compile_constraint

    check, issues = compile_constraint(schema, {"contacts": ["ana@example.com", "bo@example.com"]}, ("t",))
    assert issues == [] and check is not None
    [violation] = check.violations(arguments)
    assert violation.constraint == constraint and "bo@example.com" not in violation.constraint
