"""`warden replay`: the worker's detectors over recorded events, offline, deterministic, invalid events decoded as
strictly as the worker does and skipped; exit codes CI can gate on; binary formats framed by length."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from service.cli import main
from service.runtime.settings import BUNDLED_POLICY
from streams.backtest import frame
from tests.support.otel_spans import Recorder, otlp_json, otlp_proto

SCENARIO = BUNDLED_POLICY.parent / "scenario.jsonl"
POLICY = str(BUNDLED_POLICY)


def replay(*args: str) -> tuple[int, str]:
    """(exit code, standard output)."""
    result = CliRunner().invoke(main, ["replay", *args])
    assert not isinstance(result.exception, RecursionError | MemoryError), result.exception
    return result.exit_code, result.stdout


def replay_err(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["replay", *args])
    return result.exit_code, result.stdout, result.stderr


def event(event_id: str, tool: str = "kb.search", agent: str = "support-bot-1") -> dict[str, Any]:
    return {"event_id": event_id, "ts": "2026-11-21T10:00:00Z", "kind": "tool_call", "agent": {"id": agent},
            "tool": {"name": tool}}


def test_json_output_is_findings_then_a_summary_then_the_invalid_events() -> None:
    code, out = replay(str(SCENARIO), "--policy", str(BUNDLED_POLICY), "--output", "jsonl")
    assert code == 1, out  # findings
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
    runs = [replay(str(SCENARIO), "--policy", str(BUNDLED_POLICY), *flag)[1]
            for flag in ([], [], ["--json"], ["-o", "jsonl"])]
    assert runs[0] == runs[1] and runs[2] == runs[3] and runs[0] != runs[2]  # --json is jsonl, as it always was


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
    assert code == 1
    assert "a: unapproved_tool [medium]" in out and "c: unowned_agent [high]" in out
    assert "summary: 2 events, 2 findings, 1 invalid" in out
    assert "invalid: file, element 1: " in out


def test_an_invalid_policy_is_exit_3_with_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("defaults: {security_owner: nobody}\n")
    code, out, err = replay_err(str(SCENARIO), "--policy", str(bad))
    assert code == 3 and out == ""
    assert "defaults.security_owner: owner 'nobody' is referenced but not defined" in err


def test_exit_0_without_routed_findings_and_2_when_no_event_is_valid(tmp_path: Path) -> None:
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(event("ok-1", "kb.search")) + "\n")
    assert replay(str(clean), "--policy", POLICY)[0] == 0
    junk = tmp_path / "junk.jsonl"
    junk.write_text("{not json\n[]\n")
    code, out, err = replay_err(str(junk), "--policy", POLICY)
    assert code == 2 and "invalid: line 1: malformed_json" in out and "no valid event (2 invalid)" in err


def test_the_worker_strict_decoder_judges_every_line_and_deep_nesting_is_reported_not_a_crash(tmp_path: Path) -> None:
    deep = '{"event_id": "deep", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    lines = [json.dumps(event("a")), deep, '{"event_id": "n", "x": NaN}', '{"event_id": "o", "x": 1e999}',
             '{"event_id": "d", "event_id": "e"}', json.dumps({**event("big"), "pad": "x" * 20_000}),
             json.dumps(event("b", "shell.exec"))]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, out = replay(str(path), "--policy", POLICY, "--max-bytes", "16384")
    assert code == 1, out  # b's unapproved tool
    reasons = {line.split(": ")[1]: line.split(": ")[2] for line in out.splitlines() if line.startswith("invalid: ")}
    assert reasons == {"line 2": "too_deep", "line 3": "non_finite_number", "line 4": "non_finite_number",
                       "line 5": "duplicate_key", "line 6": "too_large"}
    assert "summary: 2 events" in out
    one = tmp_path / "deep.json"
    one.write_text(deep)
    code, out, err = replay_err(str(one), "--policy", POLICY)
    assert code == 2 and "invalid: file: too_deep" in out and "no valid event" in err
    pretty = tmp_path / "deep-pretty.json"
    pretty.write_text("[\n" * 5000 + "]\n" * 5000)
    assert replay(str(pretty), "--policy", POLICY)[0] == 2


def test_otlp_proto_is_read_as_length_delimited_frames_never_split_at_newline_bytes(tmp_path: Path) -> None:
    rec = Recorder(**{"service.name": "billing-svc"})
    with rec.agent("billing-agent-1"), rec.tool("shell.exec", {"cmd": "cat /etc/passwd\n"}):
        pass
    spans = rec.finished()
    message = otlp_proto(spans)
    assert b"\n" in message
    framed = tmp_path / "spans.bin"
    framed.write_bytes(frame(message) + frame(message))
    code, out = replay(str(framed), "--policy", POLICY, "--format", "otlp_proto", "-o", "json")
    doc = json.loads(out)
    assert code == 1 and doc["summary"]["invalid"] == 0 and doc["summary"]["events"] == 4
    assert {f["rule"] for f in doc["findings"]} >= {"unapproved_tool"}
    raw = tmp_path / "unframed.bin"
    raw.write_bytes(message)
    code, out, err = replay_err(str(raw), "--policy", POLICY, "--format", "otlp_proto")
    assert code == 2 and out == "" and "not otlp_proto: message 1 at byte 0: its length prefix says" in err
    cut = tmp_path / "cut.bin"
    cut.write_bytes(frame(message)[:-3])
    assert replay_err(str(cut), "--policy", POLICY, "--format", "otlp_proto")[0] == 2
    json_lines = tmp_path / "spans.jsonl"
    json_lines.write_bytes(otlp_json(spans) + b"\n")
    assert replay(str(json_lines), "--policy", POLICY, "--format", "otlp_json")[0] == 1


def test_output_json_is_one_document_naming_what_was_read() -> None:
    code, out = replay(str(SCENARIO), "--policy", POLICY, "--output", "json")
    doc = json.loads(out)
    assert code == 1 and set(doc) == {"findings", "summary", "invalid", "rule_errors"}
    assert doc["summary"]["source"].startswith(f"{SCENARIO} (native), policy ")
    assert doc["summary"]["events"] == 40 and len(doc["invalid"]) == 5
