"""`warden policy lint`: every error class located by file, line and path (`policy test`: test_policy_cases.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from click.testing import CliRunner

from service.cli import main
from service.runtime.settings import BUNDLED_POLICY

Docs = dict[str, dict[str, Any]]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def write_policy(tmp_path: Path, mutate: Callable[[Docs], None] | None = None) -> Path:
    """A copy of the bundled policy folder, with `mutate` applied to its parsed files (by file name)."""
    docs = {p.name: yaml.safe_load(p.read_text()) for p in sorted(BUNDLED_POLICY.glob("*.yaml"))}
    if mutate:
        mutate(docs)
    folder = tmp_path / "policy"
    folder.mkdir()
    for name, doc in docs.items():
        (folder / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def lint_json(folder: Path) -> tuple[int, dict[str, Any]]:
    code, out = cli("policy", "lint", str(folder), "--json")
    return code, json.loads(out)


def wf(docs: Docs, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], docs["10-workflows.yaml"]["workflows"][name])  # a YAML mapping


def rules(docs: Docs) -> dict[str, Any]:
    return cast(dict[str, Any], docs["20-rules.yaml"]["rules"])  # a YAML mapping


def test_the_bundled_examples_lint_clean() -> None:
    code, out = cli("policy", "lint", str(BUNDLED_POLICY))
    assert code == 0, out
    assert out.startswith("OK: 5 workflows")
    assert "warning" not in out.split("OK:")[0]
    code, report = lint_json(BUNDLED_POLICY)
    assert (code, report["ok"], report["errors"], report["warnings"], report["issues"]) == (0, True, 0, 0, [])
    assert len(report["sha256"]) == 64


ERROR_CLASSES: list[tuple[str, Callable[[Docs], None], str, str, str]] = [
    ("missing approver", lambda d: wf(d, "billing-agent").pop("approver"),
     "10-workflows.yaml", "workflows.billing-agent.approver", "workflow has no named approver"),
    ("missing detector", lambda d: wf(d, "research-rag").pop("detector"),
     "10-workflows.yaml", "workflows.research-rag.detector", "workflow has no named detector"),
    ("missing responder", lambda d: wf(d, "support-assistant").pop("responder"),
     "10-workflows.yaml", "workflows.support-assistant.responder", "workflow has no named responder"),
    ("high-risk control without its approver role",
     lambda d: wf(d, "access-provisioner")["scope"]["identity_changes"].update(approval_from="data_owner")
     or wf(d, "access-provisioner").pop("data_owner"),
     "10-workflows.yaml", "workflows.access-provisioner.scope.identity_changes.approval_from",
     "identity changes need approval from the data_owner, and the workflow names none"),
    ("undefined owner", lambda d: wf(d, "billing-agent").update(responder="nobody"),
     "10-workflows.yaml", "workflows.billing-agent.responder", "owner 'nobody' is referenced but not defined"),
    ("undefined business owner", lambda d: wf(d, "billing-agent").update(business_owner="ghost"),
     "10-workflows.yaml", "workflows.billing-agent.business_owner", "owner 'ghost' is referenced but not defined"),
    ("undefined data owner", lambda d: wf(d, "access-provisioner").update(data_owner="ghost"),
     "10-workflows.yaml", "workflows.access-provisioner.data_owner", "owner 'ghost' is referenced but not defined"),
    ("undefined owner in an escalation chain", lambda d: wf(d, "billing-agent")["escalation"].append(
        {"owner": "ghost", "ack_timeout": "5m"}),
     "10-workflows.yaml", "workflows.billing-agent.escalation.3.owner", "owner 'ghost' is referenced"),
    ("agent claimed twice", lambda d: wf(d, "research-rag")["agents"].append("billing-agent-1"),
     "10-workflows.yaml", "workflows.research-rag.agents.1",
     "agent 'billing-agent-1' is already claimed by workflow 'billing-agent'"),
    ("CEL that does not compile", lambda d: rules(d)["custom"][0].update(condition='event.kind == "tool_call" &&'),
     "20-rules.yaml", "rules.custom.0.condition", "CEL does not compile"),
    ("CEL exception that does not compile", lambda d: rules(d)["custom"][0].update(exceptions=["(("]),
     "20-rules.yaml", "rules.custom.0.exceptions.0", "CEL does not compile"),
    ("CEL reading an unknown variable", lambda d: rules(d)["custom"][1].update(condition="request.size > 1"),
     "20-rules.yaml", "rules.custom.1.condition", "unknown variable(s) ['request']"),
    ("unknown built-in rule id", lambda d: rules(d)["builtin"].update(tool_bursts={"severity": "low"}),
     "20-rules.yaml", "rules.builtin.tool_bursts", "unknown built-in rule 'tool_bursts'"),
    ("two custom rules with one id", lambda d: rules(d)["custom"].insert(1, {**rules(d)["custom"][0]}),
     "20-rules.yaml", "rules.custom.1.id", "rule id 'large-refund' is already used"),
    ("custom rule id reusing a built-in id", lambda d: rules(d)["custom"][1].update(id="retry_loop"),
     "20-rules.yaml", "rules.custom.1.id", "rule id 'retry_loop' is already used"),
    ("unknown rule id in a playbook", lambda d: d["20-rules.yaml"]["playbooks"][0]["rules"].append("secret_acess"),
     "20-rules.yaml", "playbooks.0.rules.2", "unknown rule id 'secret_acess'"),
    ("unknown playbook", lambda d: d["20-rules.yaml"]["playbooks"][1].update(playbook="nuke_from_orbit"),
     "20-rules.yaml", "playbooks.1.playbook", "unknown playbook 'nuke_from_orbit'"),
    ("unknown action in a playbook", lambda d: hook(d).update(action="page_the_ceo"),
     "20-rules.yaml", "playbook_definitions.hold_refund.steps.0.action",
     "unknown action 'page_the_ceo' (known: notify, quarantine_agent, "),
    ("bad action parameter", lambda d: hook(d)["params"].update(url="ftp://finance.example.com/hook"),
     "20-rules.yaml", "playbook_definitions.hold_refund.steps.0.params.url", "String should match pattern"),
    ("unknown action parameter", lambda d: hook(d)["params"].update(retries=9),
     "20-rules.yaml", "playbook_definitions.hold_refund.steps.0.params.retries", "Extra inputs are not permitted"),
    ("issuer named by a step but not defined", lambda d: d["20-rules.yaml"]["playbook_definitions"].update(
        revoke_at_vault={"steps": [{"action": "revoke_token", "params": {"issuer": "vault"}}]}),
     "20-rules.yaml", "playbook_definitions.revoke_at_vault.steps.0.params.issuer", "no issuer 'vault'"),
    ("client secret written inline", lambda d: d["20-rules.yaml"]["issuers"]["corp-idp"].update(
        client_secret="hunter2"),
     "20-rules.yaml", "issuers.corp-idp.client_secret", "String should match pattern"),
]


def test_a_gate_whose_approver_cannot_act_is_an_error_at_each_binding_it_gates(tmp_path: Path) -> None:
    folder = write_policy(tmp_path, lambda d: d["00-owners.yaml"]["owners"]["jordan"].update(contacts={}))
    code, report = lint_json(folder)
    errors = [(i["path"], i["reason"]) for i in report["issues"] if i["level"] == "error"]
    reason = ("waits for workflow 'access-provisioner''s approver 'jordan', who has no contacts to approve with")
    # Every binding but the auto one (quarantine_breach → revocation_list) gates on the approver.
    assert code == 3 and [p for p, r in errors if reason in r] == ["playbooks.0.gate", "playbooks.1.gate",
                                                                    "playbooks.3.gate"], errors


def hook(docs: Docs) -> dict[str, Any]:
    """The first step of the example's own playbook (a signed webhook)."""
    return cast(dict[str, Any], docs["20-rules.yaml"]["playbook_definitions"]["hold_refund"]["steps"][0])  # a mapping


@pytest.mark.parametrize(("mutate", "file", "path", "reason"), [c[1:] for c in ERROR_CLASSES],
                         ids=[c[0] for c in ERROR_CLASSES])
def test_each_error_class_is_caught_and_located(
    tmp_path: Path, mutate: Callable[[Docs], None], file: str, path: str, reason: str
) -> None:
    folder = write_policy(tmp_path, mutate)
    code, report = lint_json(folder)
    assert code == 3 and report["ok"] is False and report["sha256"] is None
    errors = [i for i in report["issues"] if i["level"] == "error"]
    assert [(Path(i["file"]).name, i["path"]) for i in errors] == [(file, path)], errors
    assert reason in errors[0]["reason"]
    line = errors[0]["line"]  # every lint error says where: file:line, path, reason (issue 28)
    assert isinstance(line, int) and line > 0
    code, text = cli("policy", "lint", str(folder))
    assert code == 3
    assert f"error: {folder / file}:{line}: {path}: " in text and "FAILED: 1 error(s)" in text


def test_a_schema_error_is_located_in_the_file_that_wrote_it(tmp_path: Path) -> None:
    folder = write_policy(tmp_path)
    (folder / "30-local.yaml").write_text(
        "workflows:\n  research-rag:\n    agents: [research-rag-1]\n    risk: severe\n")
    code, report = lint_json(folder)
    assert code == 3
    located = {(Path(i["file"]).name, i["path"]) for i in report["issues"]}
    assert ("30-local.yaml", "workflows.research-rag.risk") in located


def test_a_later_file_overrides_a_workflow_and_its_errors_are_located_there(tmp_path: Path) -> None:
    folder = write_policy(tmp_path)
    (folder / "30-local.yaml").write_text(
        "workflows:\n  research-rag:\n    agents: [research-rag-1]\n    detector: secops\n    responder: data-gov\n"
        "    scope: {tools: [retrieval.search]}\n")
    code, report = lint_json(folder)
    assert code == 3
    [err] = [i for i in report["issues"] if i["level"] == "error"]
    assert (Path(err["file"]).name, err["path"]) == ("30-local.yaml", "workflows.research-rag.approver")


def test_unused_owners_and_empty_scopes_are_warnings_not_errors(tmp_path: Path) -> None:
    def mutate(d: Docs) -> None:
        d["00-owners.yaml"]["owners"]["intern"] = {"name": "Intern"}
        wf(d, "compliance-reviewer")["scope"] = {}

    code, report = lint_json(write_policy(tmp_path, mutate))
    assert (code, report["ok"], report["errors"]) == (0, True, 0)
    assert {(i["level"], i["path"]) for i in report["issues"]} == {
        ("warning", "owners.intern"), ("warning", "workflows.compliance-reviewer.scope")}


def test_a_workflow_without_agents_is_a_warning(tmp_path: Path) -> None:
    def mutate(d: Docs) -> None:
        wf(d, "research-rag")["agents"] = []

    code, report = lint_json(write_policy(tmp_path, mutate))
    assert (code, report["errors"]) == (0, 0), report["issues"]
    assert {(i["level"], i["path"], i["reason"].split(";")[0]) for i in report["issues"]} == {
        ("warning", "workflows.research-rag.agents", "workflow lists no agents")}


CLEAN_VARIATIONS: list[tuple[str, Callable[[Docs], None]]] = [
    ("a scope of data alone", lambda d: wf(d, "compliance-reviewer").update(scope={"data": ["s3://audit/*"]})),
    ("a scope of secrets alone", lambda d: wf(d, "compliance-reviewer").update(scope={"secrets": ["vault://a/*"]})),
    ("a scope of tools alone", lambda d: wf(d, "compliance-reviewer").update(scope={"tools": ["evidence.*"]})),
    ("no identity change needs approval, so no data owner is needed",
     lambda d: wf(d, "access-provisioner")["scope"]["identity_changes"].update(approval_from="data_owner",
                                                                                require_approval=[])
     or wf(d, "access-provisioner").pop("data_owner")),
    ("members of a notifier that checks no identity",
     lambda d: d["00-owners.yaml"]["owners"]["secops"]["members"].update(email=["secops@example.com"])),
]


@pytest.mark.parametrize("mutate", [c[1] for c in CLEAN_VARIATIONS], ids=[c[0] for c in CLEAN_VARIATIONS])
def test_what_is_not_a_problem_is_neither_an_error_nor_a_warning(
    tmp_path: Path, mutate: Callable[[Docs], None]
) -> None:
    code, report = lint_json(write_policy(tmp_path, mutate))
    assert (code, report["issues"]) == (0, [])


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    code, report = lint_json(tmp_path / "nope")
    assert code == 3 and "does not exist" in report["issues"][0]["reason"]
