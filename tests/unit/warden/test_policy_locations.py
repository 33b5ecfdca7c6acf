"""Every lint error says file:line, path and reason; a key written twice and a duration of zero or less are errors;
one stage's errors do not hide an independent later stage's (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.unit.warden.test_policy_lint import Docs, cli, lint_json, rules, wf, write_policy


def errors(folder: Path) -> list[dict[str, object]]:
    code, report = lint_json(folder)
    assert code != 0 and report["ok"] is False
    return [i for i in report["issues"] if i["level"] == "error"]


def test_a_key_written_twice_is_an_error_at_its_second_line(tmp_path: Path) -> None:
    folder = write_policy(tmp_path)
    text = (folder / "10-workflows.yaml").read_text()
    # A second `scope:` under the workflow, allowing every tool: YAML keeps the last one silently.
    lines = text.splitlines()
    at = lines.index("  support-assistant:") + 1
    lines.insert(at, "    scope: {tools: ['*']}")
    (folder / "10-workflows.yaml").write_text("\n".join(lines) + "\n")
    [issue] = errors(folder)
    assert (Path(str(issue["file"])).name, issue["path"], issue["line"]) == (
        "10-workflows.yaml", "workflows.support-assistant.scope", next(
            n for n, line in enumerate(lines, 1) if line.startswith("    scope:") and n > at + 1))
    assert "written twice (first at line " + str(at + 1) + ")" in str(issue["reason"])


@pytest.mark.parametrize(("where", "value"), [("ack_timeout", -60), ("ack_timeout", "0s")])
def test_a_duration_of_zero_or_less_is_an_error(tmp_path: Path, where: str, value: object) -> None:
    folder = write_policy(tmp_path, lambda d: wf(d, "billing-agent")["escalation"][0].update({where: value}))
    [issue] = errors(folder)
    assert issue["path"] == f"workflows.billing-agent.escalation.0.{where}"
    assert "longer than zero" in str(issue["reason"]) and isinstance(issue["line"], int)


def test_a_zero_limit_window_is_an_error(tmp_path: Path) -> None:
    folder = write_policy(tmp_path, lambda d: wf(d, "billing-agent")["scope"]["limits"]["tool_calls"].update(
        window="0s"))
    [issue] = errors(folder)
    assert issue["path"] == "workflows.billing-agent.scope.limits.tool_calls.window"


def test_a_schema_error_does_not_hide_a_custom_rule_that_can_never_fire(tmp_path: Path) -> None:
    def mutate(d: Docs) -> None:
        wf(d, "research-rag")["risk"] = "severe"
        rules(d)["custom"][1]["condition"] = '"abc"[0] == "a"'

    found = {(i["path"], str(i["reason"]).split(":")[0]) for i in errors(write_policy(tmp_path, mutate))}
    assert ("workflows.research-rag.risk", "Input should be 'low', 'high' or 'critical'") in found
    assert any(p == "rules.custom.1.condition" and "raises on every sample event" in r for p, r in found), found


def test_a_key_written_twice_does_not_hide_a_schema_error(tmp_path: Path) -> None:
    folder = write_policy(tmp_path, lambda d: wf(d, "research-rag").update(risk="severe"))
    text = (folder / "00-owners.yaml").read_text()
    (folder / "00-owners.yaml").write_text(text + "version: 1\n")
    paths = {i["path"] for i in errors(folder)}
    assert paths == {"version", "workflows.research-rag.risk"}


def test_a_rule_in_a_later_file_is_located_at_its_own_line(tmp_path: Path) -> None:
    folder = write_policy(tmp_path)
    (folder / "30-more-rules.yaml").write_text(
        "rules:\n  custom:\n    - id: second-file\n      condition: |\n        event.kind == \"prompt\"\n"
        "        && \"abc\"[0] == \"a\"\n")
    [issue] = errors(folder)
    n = len(yaml.safe_load((folder / "20-rules.yaml").read_text())["rules"]["custom"])
    assert (Path(str(issue["file"])).name, issue["path"], issue["line"]) == (
        "30-more-rules.yaml", f"rules.custom.{n}.condition", 4)


def test_lint_output_is_one_json_document_or_one_object_per_line(tmp_path: Path) -> None:
    folder = write_policy(tmp_path, lambda d: wf(d, "billing-agent").pop("approver"))
    code, as_json = cli("policy", "lint", str(folder), "--output", "json")
    assert code == 3 and cli("policy", "lint", str(folder), "--json") == (code, as_json)  # the hidden alias
    code, out = cli("policy", "lint", str(folder), "-o", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 3 and lines[:-1] == json.loads(as_json)["issues"]
    assert lines[-1]["summary"] == {k: v for k, v in json.loads(as_json).items() if k != "issues"}


def test_a_file_nested_too_deep_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    folder = write_policy(tmp_path)
    (folder / "30-deep.yaml").write_text("lists: {deep: " + "[" * 5000 + "]" * 5000 + "}\n")
    [issue] = errors(folder)
    assert (Path(str(issue["file"])).name, issue["reason"]) == ("30-deep.yaml", "nested too deep to read")
