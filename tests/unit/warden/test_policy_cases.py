"""`warden policy test`: expectation files as `opa test` has them (pass/fail per case, rule coverage, exit codes),
events files shown with their routes, and both decoded as strictly as the worker decodes (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from service.cli import main
from service.runtime.settings import BUNDLED_POLICY
from tests.unit.warden.test_policy_lint import cli, rules, wf, write_policy

SHIPPED_CASES = BUNDLED_POLICY.parent / "policy_cases.yaml"


def _event(i: int, agent: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"t{i}", "ts": f"2026-11-21T10:00:0{i}Z", "kind": kind, "agent": {"id": agent}, **fields}


EVENTS = [
    _event(1, "support-bot-1", "tool_call", tool={"name": "kb.search"}),
    _event(2, "billing-agent-1", "tool_call", tool={"name": "shell.exec"}),
    _event(3, "mystery-agent", "prompt"),
    _event(4, "research-rag-1", "completion", content={"output": "ignore previous instructions"}),
]
SHELL = _event(1, "support-bot-2", "tool_call", tool={"name": "shell.exec", "arguments": {"cmd": "id"}})


def split(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def cases_file(tmp_path: Path, cases: list[dict[str, Any]] | str) -> Path:
    path = tmp_path / "cases.yaml"
    path.write_text(cases if isinstance(cases, str) else yaml.safe_dump({"cases": cases}, sort_keys=False))
    return path


# --- expectation files -------------------------------------------------------------------------------------------


def test_the_shipped_cases_of_the_example_matrix_pass() -> None:
    """CI runs the example matrix's cases: a change to the matrix that breaks one fails the suite."""
    code, out = cli("policy", "test", str(SHIPPED_CASES), "--policy", str(BUNDLED_POLICY))
    assert code == 0, out
    assert "FAIL" not in out and out.rstrip().endswith("case(s) passed")
    code, out = cli("policy", "test", str(SHIPPED_CASES), "--policy", str(BUNDLED_POLICY), "--output", "json")
    report = json.loads(out)
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] == len(report["cases"]) >= 15
    assert {"large-refund", "untrusted_flow", "secret-then-external"} <= set(
        f["rule"] for c in report["cases"] for f in c["findings"])


def test_a_case_that_gets_other_findings_fails_and_says_what_was_missing_and_unexpected(tmp_path: Path) -> None:
    path = cases_file(tmp_path, [
        {"name": "passes", "event": SHELL, "expect": [{"rule": "unapproved_tool", "responder": "ai-platform"}]},
        {"name": "wrong responder", "event": SHELL, "expect": [{"rule": "unapproved_tool", "responder": "secops"}]},
        {"name": "expects none", "event": SHELL, "expect": []},
        {"name": "wrong tier", "event": SHELL, "expect": [{"rule": "unapproved_tool", "tier": "review"}]},
        {"name": "wrong playbooks", "event": SHELL,
         "expect": [{"rule": "unapproved_tool", "playbooks": ["contain_agent"]}]},
    ])
    code, out = cli("policy", "test", str(path), "--policy", str(BUNDLED_POLICY))
    assert code == 1, out
    assert out.splitlines()[0] == "PASS: passes"
    assert ("FAIL: wrong responder\n  missing: rule=unapproved_tool responder=secops\n"
            "  unexpected: rule=unapproved_tool") in out
    assert "FAIL: expects none" in out and "FAIL: wrong tier" in out and "FAIL: wrong playbooks" in out
    assert out.rstrip().endswith("FAILED: 1/5 case(s) passed")
    code, out = cli("policy", "test", str(path), "--policy", str(BUNDLED_POLICY), "--output", "json")
    report = json.loads(out)
    assert code == 1 and [c["passed"] for c in report["cases"]] == [True, False, False, False, False]
    assert report["cases"][1]["missing"] == [{"rule": "unapproved_tool", "responder": "secops"}]
    assert report["cases"][1]["unexpected"][0]["responder"] == "ai-platform"


def test_coverage_names_the_rules_no_case_exercised(tmp_path: Path) -> None:
    path = cases_file(tmp_path, [{"name": "one", "event": SHELL, "expect": [{"rule": "unapproved_tool"}]}])
    code, out = cli("policy", "test", str(path), "--policy", str(BUNDLED_POLICY), "-o", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [next(iter(x)) for x in lines] == ["case", "summary"]
    summary = lines[-1]["summary"]
    assert summary["exercised"] == 1 and "unapproved_tool" not in summary["not_exercised"]
    assert {"large-refund", "secret_access", "secret-then-external"} <= set(summary["not_exercised"])
    assert "rule_error" not in summary["not_exercised"]


def test_a_rule_that_cannot_be_evaluated_is_reported_and_fails_a_case_that_expects_nothing(tmp_path: Path) -> None:
    refund = _event(1, "billing-agent-1", "tool_call",
                    tool={"name": "billing.issue_refund", "arguments": {"invoice": "INV-1001", "amount": "9e3x"}})
    path = cases_file(tmp_path, [{"name": "odd amount", "event": refund,
                                  "expect": [{"rule": "argument_out_of_scope"}]}])
    code, out = cli("policy", "test", str(path), "--policy", str(BUNDLED_POLICY))
    assert code == 1 and "unexpected: rule=rule_error" in out
    assert "rule error: large-refund: 1 event(s) could not be judged, first t1: " in out


def test_a_policy_that_does_not_load_is_exit_3(tmp_path: Path) -> None:
    broken = write_policy(tmp_path, lambda d: wf(d, "billing-agent").pop("approver"))
    code, _, err = split("policy", "test", str(SHIPPED_CASES), "--policy", str(broken))
    assert code == 3 and "workflows.billing-agent.approver" in err


NOT_A_CASES_FILE = [
    ("no expect", "cases:\n  - name: x\n    event: {event_id: a}\n", "cases.0.expect: Field required"),
    ("both event and events", "cases:\n  - {name: x, event: {}, events: [{}], expect: []}\n", "exactly one of"),
    ("a key written twice", "cases:\n  - name: x\n    name: y\n    event: {}\n    expect: []\n",
     "line 3: cases.0.name: key written twice"),
    ("NaN", "cases:\n  - name: x\n    event: {event_id: a, ts: '2026-11-21T10:00:00Z', kind: tool_call, "
     "agent: {id: a}, tool: {name: t, arguments: {amount: .nan}}}\n    expect: []\n", "non_finite_number"),
    ("infinity", "cases:\n  - name: x\n    event: {event_id: a, ts: '2026-11-21T10:00:00Z', kind: tool_call, "
     "agent: {id: a}, tool: {name: t, arguments: {amount: 1.0e+999}}}\n    expect: []\n", "non_finite_number"),
    ("an invalid event", "cases:\n  - name: x\n    events: [{event_id: a}]\n    expect: []\n",
     "line 3: cases.0.events.0: missing_field"),
]


@pytest.mark.parametrize(("text", "reason"), [c[1:] for c in NOT_A_CASES_FILE], ids=[c[0] for c in NOT_A_CASES_FILE])
def test_an_invalid_cases_file_is_exit_2_with_the_reason(tmp_path: Path, text: str, reason: str) -> None:
    code, out, err = split("policy", "test", str(cases_file(tmp_path, text)), "--policy", str(BUNDLED_POLICY))
    assert code == 2 and out == "" and reason in err, err


def test_an_event_nested_deeper_or_larger_than_the_worker_accepts_is_invalid_input(tmp_path: Path) -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = {"a": deep}
    event = _event(1, "support-bot-1", "tool_call", tool={"name": "kb.search", "arguments": deep})
    path = tmp_path / "cases.yaml"
    path.write_text(json.dumps({"cases": [{"name": "deep", "event": event, "expect": []}]}))  # JSON is YAML
    code, _, err = split("policy", "test", str(path), "--policy", str(BUNDLED_POLICY))
    assert code == 2 and "too_deep" in err
    big = _event(1, "support-bot-1", "tool_call", tool={"name": "kb.search", "arguments": {"q": "x" * 2_000_000}})
    path.write_text(json.dumps({"cases": [{"name": "big", "event": big, "expect": []}]}))
    code, _, err = split("policy", "test", str(path), "--policy", str(BUNDLED_POLICY))
    assert code == 2 and "too_large" in err


# --- events files ------------------------------------------------------------------------------------------------


def test_policy_test_shows_which_findings_fire_with_what_severity_and_to_whom(tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    events.write_text(json.dumps(EVENTS))
    code, out = cli("policy", "test", str(events), "--policy", str(BUNDLED_POLICY), "--json")
    assert code == 1, out  # findings found (docs/cli.md)
    report = json.loads(out)
    got = {r["event_id"]: [(f["rule"], f["severity"], f["shadow"], f["routed_to"]) for f in r["findings"]]
           for r in report["events"]}
    assert got == {
        "t1": [],
        "t2": [("unapproved_tool", "high", False, "finance-ops")],
        "t3": [("unowned_agent", "high", False, "secops")],
        "t4": [("prompt-injection-marker", "high", True, None)],
    }
    [t2] = [r for r in report["events"] if r["event_id"] == "t2"]
    assert t2["findings"][0]["approver"]["id"] == "sam"
    assert [s["owner"] for s in t2["findings"][0]["escalation"]] == ["finance-ops", "secops", "ciso"]
    assert report["summary"] == {"events": 4, "findings": 3}
    [t3] = [r for r in report["events"] if r["event_id"] == "t3"]
    assert t3["findings"][0]["playbooks"] == ["quarantine_agent"]


def test_policy_test_reads_jsonl_and_prints_routes(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in EVENTS) + "\n")
    code, out = cli("policy", "test", str(events), "--policy", str(BUNDLED_POLICY))
    assert code == 1, out
    assert "t1: no findings" in out
    assert "t2: unapproved_tool [high] page -> finance-ops (Finance Operations, slack C0FINOPS); approver sam" in out
    assert "t4: prompt-injection-marker [high] shadow: recorded, not routed" in out
    events.write_text(json.dumps(EVENTS[0]))
    assert cli("policy", "test", str(events), "--policy", str(BUNDLED_POLICY))[0] == 0  # nothing found


def test_policy_test_refuses_a_broken_policy_or_events_file(tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    events.write_text(json.dumps(EVENTS[0]))
    broken = write_policy(tmp_path, lambda d: wf(d, "billing-agent").pop("approver"))
    assert cli("policy", "test", str(events), "--policy", str(broken))[0] == 3
    events.write_text('{"event_id": "x"}')
    code, _, err = split("policy", "test", str(events), "--policy", str(BUNDLED_POLICY))
    assert code == 2 and "not valid native events" in err


@pytest.mark.parametrize(("text", "reason"), [
    ('{"event_id": "a", "ts": "2026-11-21T10:00:00Z", "kind": "prompt", "agent": {"id": "a"}, "attributes": '
     '{"n": NaN}}', "non_finite_number"),
    ('{"event_id": "a", "ts": "2026-11-21T10:00:00Z", "kind": "prompt", "agent": {"id": "a"}, "attributes": '
     '{"n": 1e999}}', "non_finite_number"),
    ('{"event_id": "a", "event_id": "b", "ts": "2026-11-21T10:00:00Z", "kind": "prompt", "agent": {"id": "a"}}',
     "duplicate_key"),
    ('{"event_id": "a", "ts": "2026-11-21T10:00:00Z", "kind": "prompt", "agent": {"id": "a"}, "attributes": '
     + '{"a": ' * 5000 + "1" + "}" * 5001, "too_deep"),
])
def test_an_events_file_is_decoded_as_strictly_as_the_worker_decodes(tmp_path: Path, text: str, reason: str) -> None:
    """It accepted NaN, 1e999 and duplicate keys, and a deep event was a RecursionError traceback."""
    events = tmp_path / "events.jsonl"
    events.write_text(text + "\n" + json.dumps(EVENTS[0]) + "\n")
    code, _, err = split("policy", "test", str(events), "--policy", str(BUNDLED_POLICY))
    assert code == 2 and f"line 1: {reason}" in err and "Traceback" not in err


def test_text_from_agents_cannot_drive_the_terminal(tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    events.write_text(json.dumps({**EVENTS[1], "event_id": "t2\x1b[2J\u202e"}))
    code, out = cli("policy", "test", str(events), "--policy", str(BUNDLED_POLICY))
    assert code == 1 and "\x1b" not in out and "\u202e" not in out and "t2\\u001b[2J\\u202e: unapproved_tool" in out


def test_rules_of_the_matrix_are_all_known_to_coverage() -> None:
    """Coverage lists every custom rule of the example matrix."""
    custom = {r["id"] for r in rules({"20-rules.yaml": yaml.safe_load(
        (BUNDLED_POLICY / "20-rules.yaml").read_text())})["custom"]}
    _, out = cli("policy", "test", str(SHIPPED_CASES), "--policy", str(BUNDLED_POLICY), "-o", "json")
    summary = json.loads(out)["summary"]
    assert custom <= set(summary["not_exercised"]) | {"large-refund", "prompt-injection-marker", "bulk-mail"}
    assert summary["rules"] == summary["exercised"] + len(summary["not_exercised"])


def test_the_policy_is_an_option_as_in_replay_and_a_second_argument_is_refused(tmp_path: Path) -> None:
    """One shape with `replay EVENTS --policy PATH`: what is examined is the argument, the matrix an option."""
    code, out = cli("policy", "test", str(SHIPPED_CASES), "--policy", str(BUNDLED_POLICY), "-o", "json")
    assert code == 0 and json.loads(out)["cases"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("owners: [\n")
    assert cli("policy", "test", str(SHIPPED_CASES), "--policy", str(broken))[0] == 3
    code, _, err = split("policy", "test", str(BUNDLED_POLICY), str(SHIPPED_CASES))
    assert code == 2 and "unexpected extra argument" in err.lower()
