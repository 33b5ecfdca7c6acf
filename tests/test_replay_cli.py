"""`warden replay`: the worker's detectors over recorded events, offline, deterministic, invalid events skipped."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from warden.cli import main
from warden.runtime.settings import BUNDLED_POLICY

SCENARIO = BUNDLED_POLICY.parent / "scenario.jsonl"


def replay(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["replay", *args])
    return result.exit_code, result.output


def test_json_output_is_findings_then_a_summary_then_the_invalid_events() -> None:
    code, out = replay(str(SCENARIO), "--policy", str(BUNDLED_POLICY), "--json")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    findings = [x for x in lines if "rule" in x]
    [summary] = [x["summary"] for x in lines if "summary" in x]
    invalid = [x["invalid"] for x in lines if "invalid" in x]
    assert lines == [*findings, {"summary": summary}, *({"invalid": i} for i in invalid)]
    assert all({"event_id", "rule", "severity", "shadow"} <= f.keys() for f in findings)
    assert ("s-106", "unreviewed_identity_change") in {(f["event_id"], f["rule"]) for f in findings}
    assert [f["shadow"] for f in findings if f["rule"] == "prompt-injection-marker"] == [True]
    assert summary["events"] == 40 and summary["findings"] == len(findings) and summary["invalid"] == 5
    assert sum(r["count"] for r in summary["by_rule"]) == len(findings)
    assert [i["where"] for i in invalid] == ["line 10", "line 11", "line 12", "line 13", "line 14"]
    assert invalid[2]["reason"].startswith("unknown_kind")
    assert "hvs.CAESIJ-not-a-real-token" not in out


def test_the_same_input_gives_the_same_output() -> None:
    runs = {replay(str(SCENARIO), "--policy", str(BUNDLED_POLICY), *flag)[1] for flag in ([], [], ["--json"])}
    assert len(runs) == 2  # text twice (identical) and JSON once


def test_a_json_array_file_with_one_bad_element_keeps_the_others(tmp_path: Path) -> None:
    events = [
        {"event_id": "a", "ts": "2026-11-21T10:00:00Z", "kind": "tool_call", "agent": {"id": "support-bot-1"},
         "tool": {"name": "shell.exec"}},
        {"event_id": "b", "ts": "not a time", "kind": "tool_call", "agent": {"id": "support-bot-1"}},
        {"event_id": "c", "ts": "2026-11-21T10:00:01Z", "kind": "prompt", "agent": {"id": "ghost"}},
    ]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(events, indent=2))
    code, out = replay(str(path), "--policy", str(BUNDLED_POLICY))
    assert code == 0
    assert "a: unapproved_tool [medium]" in out and "c: unowned_agent [high]" in out
    assert "summary: 2 events, 2 findings, 1 invalid" in out
    assert "invalid: file, element 1: " in out


def test_an_invalid_policy_is_exit_2_with_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("defaults: {security_owner: nobody}\n")
    code, out = replay(str(SCENARIO), "--policy", str(bad))
    assert code == 2
    assert "defaults.security_owner: owner 'nobody' is referenced but not defined" in out
