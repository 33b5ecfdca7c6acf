"""`warden replay --against OLD [--labels FILE]`: the findings that appear and disappear from OLD to the new policy,
per rule and workflow, precision and recall of both on labelled sessions, and the exit codes CI gates a promotion
on (1 when the new policy alerts on a benign session, or misses a hijacked one, that OLD handled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from service.cli import main
from service.runtime.settings import BUNDLED_POLICY

SESSIONS = Path(__file__).resolve().parents[2] / "support" / "data" / "sessions"
EVENTS, LABELS = SESSIONS / "sessions.jsonl", SESSIONS / "labels.json"


def replay(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["replay", str(EVENTS), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout


def variant(tmp_path: Path, change: Any) -> Path:
    """The bundled matrix with `change` applied to its workflows file."""
    folder = tmp_path / "variant"
    folder.mkdir()
    for source in sorted(BUNDLED_POLICY.glob("*.yaml")):
        doc = yaml.safe_load(source.read_text())
        if source.name == "10-workflows.yaml":
            change(doc["workflows"])
        (folder / source.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def test_the_same_policy_changes_nothing_and_exits_0() -> None:
    code, out = replay("--policy", str(BUNDLED_POLICY), "--against", str(BUNDLED_POLICY), "--labels", str(LABELS),
                       "-o", "json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["appeared"] == doc["disappeared"] == []
    labels = doc["summary"]["labels"]
    assert labels["old"] == labels["new"] and labels["old"]["recall"] == 1.0 and labels["old"]["precision"] == 1.0
    assert labels["new_false_alerts"] == labels["new_misses"] == []


def test_new_alerts_on_benign_sessions_exit_1_and_are_named(tmp_path: Path) -> None:
    def drop_kb_search(workflows: dict[str, Any]) -> None:
        workflows["support-assistant"]["scope"]["tools"].remove("kb.search")

    code, out = replay("--policy", str(variant(tmp_path, drop_kb_search)), "--against", str(BUNDLED_POLICY),
                       "--labels", str(LABELS), "-o", "text")
    assert code == 1, out
    assert "  unapproved_tool (support-assistant): +" in out and " -0" in out
    assert "regression: new alerts on benign: benign-" in out
    assert "regression: new misses" not in out


def test_new_misses_hijacked_sessions_old_caught_exit_1(tmp_path: Path) -> None:
    def loosen_mail(workflows: dict[str, Any]) -> None:
        wf = workflows["billing-agent"]["scope"]
        del wf["arguments"]["mail.send"]
        del wf["untrusted_flow"]["unless"]["mail.send"]
        wf["untrusted_flow"]["unless"]["mail.send"] = {"type": "object"}

    code, out = replay("--policy", str(variant(tmp_path, loosen_mail)), "--against", str(BUNDLED_POLICY),
                       "--labels", str(LABELS), "-o", "jsonl")
    assert code == 1, out
    lines = [json.loads(x) for x in out.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["labels"]["new_misses"] and not summary["labels"]["new_false_alerts"]
    assert summary["labels"]["new"]["recall"] < summary["labels"]["old"]["recall"] == 1.0
    assert {x["change"] for x in lines[:-1]} == {"-"}
    assert {(r["rule"], r["workflow"]) for r in summary["by_rule"]} >= {("argument_out_of_scope", "billing-agent")}


def test_a_shadow_draft_counts_only_with_as_enforced(tmp_path: Path) -> None:
    benign = {s for s, v in json.loads(LABELS.read_text()).items() if v["verdict"] == "benign"}
    lines = [x for x in EVENTS.read_text().splitlines() if any(f'"session_id": "{s}"' in x for s in benign)]
    (tmp_path / "benign.jsonl").write_text("\n".join(lines) + "\n")
    draft = tmp_path / "draft"
    result = CliRunner().invoke(main, ["policy", "learn", str(tmp_path / "benign.jsonl"), "--policy",
                                       str(BUNDLED_POLICY), "--out", str(draft)])
    assert result.exit_code == 0, result.stdout
    shadow = json.loads(replay("--policy", str(draft), "--against", str(BUNDLED_POLICY), "--labels", str(LABELS),
                               "-o", "json")[1])["summary"]["labels"]["new"]
    code, out = replay("--policy", str(draft), "--against", str(BUNDLED_POLICY), "--labels", str(LABELS),
                       "--as-enforced", "-o", "json")
    enforced = json.loads(out)["summary"]["labels"]["new"]
    assert enforced["caught"] > shadow["caught"]
    assert enforced["false_alerts"] == 0  # learned from the benign sessions, judged on them: none alerted
    assert code == 1  # the draft misses attacks the hand-written matrix catches: the gate says so


def test_usage_errors_exit_2() -> None:
    assert replay("--policy", str(BUNDLED_POLICY), "--labels", str(LABELS))[0] == 2  # labels need --against
    code, _ = replay("--policy", str(BUNDLED_POLICY), "--against", str(BUNDLED_POLICY), "--labels",
                     str(EVENTS))  # JSON Lines, not a labels object
    assert code == 2


def test_an_old_policy_that_does_not_load_exits_3(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("version: 2\n")
    assert replay("--policy", str(BUNDLED_POLICY), "--against", str(tmp_path / "bad.yaml"))[0] == 3


def test_without_labels_a_routed_change_exits_1(tmp_path: Path) -> None:
    def drop_kb_search(workflows: dict[str, Any]) -> None:
        workflows["support-assistant"]["scope"]["tools"].remove("kb.search")

    assert replay("--policy", str(variant(tmp_path, drop_kb_search)), "--against", str(BUNDLED_POLICY))[0] == 1
