"""The lint locates every mistake in constraints, lists, the catalogue, flow rules and CEL functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from tests.unit.warden.test_policy_lint import Docs, cli, lint_json, rules, wf, write_policy


def catalogue(docs: Docs) -> dict[str, Any]:
    return docs["05-catalogue.yaml"]


def args(docs: Docs, workflow: str) -> dict[str, dict[str, Any]]:
    return cast(dict[str, dict[str, Any]], wf(docs, workflow)["scope"]["arguments"])  # tool -> its schema


def _close_pay_vendor(d: Docs) -> None:
    args(d, "billing-agent")["billing.pay_vendor"]["additionalProperties"] = False
    catalogue(d)["tools"]["billing.pay_vendor"]["resource"] = "payee_id"


WF = "workflows.billing-agent.scope"
ERROR_CLASSES: list[tuple[str, Callable[[Docs], None], str, str, str]] = [
    ("unknown list", lambda d: args(d, "billing-agent")["mail.send"]["properties"]["to"].update(
        items={"email_domain_in": "company_domain"}),
     "10-workflows.yaml", f"{WF}.arguments.mail.send.properties.to.items.email_domain_in",
     "unknown list 'company_domain'"),
    ("invalid JSON Schema", lambda d: args(d, "billing-agent")["billing.issue_refund"]["properties"][
        "amount"].update(type="numbr"),
     "10-workflows.yaml", f"{WF}.arguments.billing.issue_refund.properties.amount.type", "invalid JSON Schema"),
    ("invalid regex", lambda d: args(d, "billing-agent")["billing.issue_refund"]["properties"][
        "invoice"].update(pattern="^INV-[0-9{3"),
     "10-workflows.yaml", f"{WF}.arguments.billing.issue_refund.properties.invoice.pattern", "regex"),
    ("a list entry that is not a domain", lambda d: catalogue(d)["lists"]["company_domains"].append(
        "https://example.com"),
     "05-catalogue.yaml", "lists.company_domains", "'https://example.com' is not a domain name"),
    ("unknown category", lambda d: catalogue(d)["tools"]["mail.send"].update(
        categories=["external_com"]),
     "05-catalogue.yaml", "tools.mail.send.categories.0", "Input should be"),
    ("unknown argument path", _close_pay_vendor,
     "05-catalogue.yaml", "tools.billing.pay_vendor.resource", "argument path 'payee_id' is not among the properties"),
    ("constraints on a tool the scope does not allow", lambda d: args(d, "billing-agent").update(
        {"shell.exec": {"type": "object"}}),
     "10-workflows.yaml", f"{WF}.arguments.shell.exec", "a tool the scope does not allow"),
    # Globs are not tool names here (issue 28): they passed the lint and then constrained nothing, or never matched.
    ("a glob naming the tools a constraint applies to", lambda d: args(d, "billing-agent").update(
        {"crm.read_*": {"type": "object", "required": ["account"]}}),
     "10-workflows.yaml", f"{WF}.arguments.crm.read_*", "must be an exact tool name"),
    ("a glob in the built-in flow's exceptions", lambda d: wf(d, "billing-agent")["scope"]["untrusted_flow"][
        "unless"].update({"mail.send*": {"type": "object"}}),
     "10-workflows.yaml", f"{WF}.untrusted_flow.unless.mail.send*", "must be an exact tool name"),
    ("a glob in a flow rule's exceptions", lambda d: wf(d, "compliance-reviewer")["scope"]["flows"][0][
        "unless"].update({"ticket.*": {"type": "object"}}),
     "10-workflows.yaml", "workflows.compliance-reviewer.scope.flows.0.unless.ticket.*", "must be an exact tool name"),
    ("a flow window longer than the session state lives", lambda d: wf(d, "billing-agent")["scope"][
        "untrusted_flow"].update(within="3h"),
     "10-workflows.yaml", f"{WF}.untrusted_flow.within", "longer than the 2:00:00"),
    ("a flow rule id already used", lambda d: wf(d, "compliance-reviewer")["scope"]["flows"][0].update(
        id="retry_loop"),
     "10-workflows.yaml", "workflows.compliance-reviewer.scope.flows.0.id", "rule id 'retry_loop' is already used"),
    ("a CEL function that does not exist", lambda d: rules(d)["custom"][0].update(
        condition='event.kind == "tool_call" && event.tool.name.lowerAscii() == "x"'),
     "20-rules.yaml", "rules.custom.0.condition", "unknown function(s) ['lowerAscii']"),
]


@pytest.mark.parametrize(("mutate", "file", "path", "reason"), [c[1:] for c in ERROR_CLASSES],
                         ids=[c[0] for c in ERROR_CLASSES])
def test_each_scope_error_is_caught_and_located(
    tmp_path: Path, mutate: Callable[[Docs], None], file: str, path: str, reason: str
) -> None:
    folder = write_policy(tmp_path, mutate)
    code, report = lint_json(folder)
    assert code == 3 and report["ok"] is False
    errors = [i for i in report["issues"] if i["level"] == "error"]
    assert [(Path(i["file"]).name, i["path"]) for i in errors] == [(file, path)], errors
    assert reason in errors[0]["reason"]


def test_a_flow_rule_over_a_category_no_tool_has_is_a_warning(tmp_path: Path) -> None:
    def mutate(d: Docs) -> None:
        wf(d, "compliance-reviewer")["scope"]["flows"][0].update(then=["destructive", "payment"])
        catalogue(d)["tools"].pop("files.delete*")

    code, report = lint_json(write_policy(tmp_path, mutate))
    assert code == 0
    [warning] = report["issues"]
    assert warning["path"] == "workflows.compliance-reviewer.scope.flows.0.then.0"
    assert "filed under 'destructive': the rule can never fire" in warning["reason"]


def test_a_playbook_may_name_a_workflow_flow_rule(tmp_path: Path) -> None:
    folder = write_policy(tmp_path, lambda d: d["20-rules.yaml"]["playbooks"].append(
        {"rules": ["secret-then-external", "untrusted_flow"], "playbook": "quarantine_agent"}))
    code, out = cli("policy", "lint", str(folder))
    assert code == 0, out


def test_a_flow_window_of_exactly_the_session_ttl_is_allowed(tmp_path: Path) -> None:
    folder = write_policy(tmp_path, lambda d: wf(d, "billing-agent")["scope"]["untrusted_flow"].update(within="2h"))
    code, report = lint_json(folder)
    assert code == 0 and report["issues"] == [], report


def test_a_resource_path_is_checked_for_a_glob_in_the_catalogue_and_against_no_properties(tmp_path: Path) -> None:
    def glob(d: Docs) -> None:
        args(d, "billing-agent")["billing.pay_vendor"]["additionalProperties"] = False
        catalogue(d)["tools"]["billing.pay_*"] = {"categories": ["payment"], "resource": "payee_id"}

    code, report = lint_json(write_policy(mkdir(tmp_path / "glob"), glob))
    errors = [(i["path"], i["reason"]) for i in report["issues"] if i["level"] == "error"]
    assert code == 3 and [p for p, _ in errors] == ["tools.billing.pay_*.resource"], errors

    def no_properties(d: Docs) -> None:
        _close_pay_vendor(d)
        args(d, "billing-agent")["billing.pay_vendor"]["properties"] = {}

    code, report = lint_json(write_policy(mkdir(tmp_path / "none"), no_properties))
    [error] = [i for i in report["issues"] if i["level"] == "error"]
    assert code == 3 and "constrains for this tool (none), which allows no others" in error["reason"], error


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path
