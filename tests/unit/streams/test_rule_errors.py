"""A custom rule that cannot be evaluated on an event is seen where the author looks: `replay` and `policy test`
report it per rule, and the finding stream carries one `rule_error` per rule and interval (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.warden.test_policy_lint import Docs, cli, rules, write_policy

AMOUNT_RULE = {"id": "refund-amount", "owner": "finance-ops", "severity": "medium",
               "condition": 'event.kind == "tool_call" && event.tool.name == "billing.issue_refund" '
                            "&& double(event.tool.arguments.amount) > 500.0"}


def _with_rule(d: Docs) -> None:
    rules(d)["custom"].append(AMOUNT_RULE)


def refund(i: int, amount: Any) -> dict[str, Any]:
    return {"event_id": f"r{i}", "ts": f"2026-11-21T10:00:0{i}Z", "kind": "tool_call",
            "agent": {"id": "billing-agent-1"}, "session_id": "s1",
            "tool": {"name": "billing.issue_refund", "arguments": {"invoice": "INV-1001", "amount": amount}}}


def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in (refund(1, "9e3x"), refund(2, 20), refund(3, "9e3x"))))
    return path


def test_replay_reports_each_rule_that_could_not_be_evaluated(tmp_path: Path) -> None:
    folder = write_policy(tmp_path, _with_rule)
    _, out = cli("replay", str(events_file(tmp_path)), "--policy", str(folder), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    errors = {x["rule_error"]["rule"]: x["rule_error"] for x in lines if "rule_error" in x}
    assert sorted(errors) == ["large-refund", "refund-amount"]  # the bundled rule skipped "9e3x" silently too
    error = errors["refund-amount"]
    assert (error["rule"], error["count"], error["first_event"]) == ("refund-amount", 2, "r1")
    assert "double" in error["error"]
    # One rule_error finding for the two failures (once per rule and interval), routed to the rule's owner.
    assert [(x["event_id"], x["target"]) for x in lines if x.get("rule") == "rule_error"] == [
        ("r1", "large-refund"), ("r1", "refund-amount")]
    _, text = cli("replay", str(events_file(tmp_path)), "--policy", str(folder))
    assert "rule error: refund-amount: 2 event(s) could not be judged, first r1: " in text
