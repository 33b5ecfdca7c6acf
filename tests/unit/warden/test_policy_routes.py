"""`warden policy routes WORKFLOW [--tree]`: who gets a workflow's findings, as amtool's `routes show` (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from service.cli import main
from service.runtime.settings import BUNDLED_POLICY
from tests.unit.warden.test_policy_lint import Docs, wf, write_policy


def routes(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["policy", "routes", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_names_the_roles_chain_channels_gates_and_playbooks() -> None:
    code, out, _ = routes("billing-agent", "--policy", str(BUNDLED_POLICY), "--output", "json")
    assert code == 0
    r = json.loads(out)
    assert (r["workflow"], r["risk"], r["mode"], r["agents"]) == ("billing-agent", "high", "agentic",
                                                                  ["billing-agent-1"])
    assert (r["responder"]["id"], r["approver"]["id"], r["detector"]["id"]) == ("finance-ops", "sam", "secops")
    assert [(s["owner"]["id"], s["ack_timeout_s"]) for s in r["escalation"]] == [
        ("finance-ops", 600), ("secops", 1200), ("ciso", 1800)]
    assert r["channels"] == {"slack": ["C0FINOPS", "C0SECOPS", "U0CISO"], "email": ["secops@example.com"]}
    assert [g["gate"] for g in r["gates"]] == ["identity_changes"]
    assert [(p["playbook"], p["gate"]) for p in r["playbooks"]] == [
        ("contain_agent", "auto_if_critical"), ("quarantine_agent", "approver"), ("revocation_list", "auto"),
        ("hold_refund", "approver")]
    assert r["playbooks"][3]["steps"] == ["webhook"] and r["playbooks"][3]["dry_run"] is True


def test_an_agent_id_resolves_to_its_workflow_and_the_tree_draws_every_section() -> None:
    code, out, _ = routes("iam-agent-1", "--policy", str(BUNDLED_POLICY), "--tree")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "access-provisioner (risk critical, agentic; agents: iam-agent-1)"
    assert "├── responder: iam-team (Identity & Access; slack C0IAM)" in lines
    assert "│   └── 3. ciso (Dana Whitfield (CISO); slack U0CISO) after 15m" in lines
    assert any(line.startswith("│   └── identity changes grant_*, create_key, reset_mfa: approval by the approver "
                               "(jordan) within 30m") for line in lines)
    assert lines[-1].startswith("    └── every other finding")


def test_the_approval_gates_of_categories_and_custom_rules_are_shown(tmp_path: Path) -> None:
    def mutate(d: Docs) -> None:
        wf(d, "billing-agent")["scope"]["approvals"] = {"categories": ["payment"], "timeout": "10m"}
        d["20-rules.yaml"]["rules"]["custom"][0]["gate"] = "approval"

    code, out, _ = routes("billing-agent", "--policy", str(write_policy(tmp_path, mutate)))
    assert code == 0
    assert "gates: calls of payment: approval by sam first, 10m per escalation step" in out
    assert "gates: custom rule large-refund: approval by sam first" in out


def test_an_unknown_workflow_is_exit_2_and_a_broken_policy_exit_3(tmp_path: Path) -> None:
    code, out, err = routes("nobody", "--policy", str(BUNDLED_POLICY))
    assert code == 2 and out == "" and "no workflow or agent 'nobody'" in err and "billing-agent" in err
    broken = write_policy(tmp_path, lambda d: wf(d, "billing-agent").pop("approver"))
    code, _, err = routes("billing-agent", "--policy", str(broken))
    assert code == 3 and "workflows.billing-agent.approver" in err
