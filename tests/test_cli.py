"""The `warden` command as a user meets it: schema output, and start-up failures as one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.kafka_helpers import event

REPO = Path(__file__).resolve().parent.parent


def _warden(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "warden", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout, check=False)


def test_schema_prints_a_valid_json_schema_that_accepts_events_and_rejects_bad_ones() -> None:
    out = _warden("schema")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(event("a1", tool={"name": "kb.search", "arguments": {"q": "x"}}))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"event_id": "x", "kind": "teleport", "agent": {"id": "a"}, "ts": "2026-11-21T10:00:00Z"})
    assert set(schema["required"]) == {"event_id", "ts", "kind", "agent"}


def test_an_unreachable_broker_is_one_line_naming_the_address_and_a_non_zero_exit() -> None:
    out = _warden("run", env={"WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "WARDEN_WEB_BIND": "127.0.0.1:0"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in lines[0]
    assert "Traceback" not in out.stderr


def test_a_missing_policy_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    out = _warden("run", env={"WARDEN_POLICY": str(missing)})
    assert out.returncode == 2
    assert out.stderr.strip() == f"warden: policy error: {missing}: policy file or folder does not exist"


def test_an_invalid_policy_names_the_file_the_path_and_the_reason(tmp_path: Path) -> None:
    policy = tmp_path / "matrix.yaml"
    policy.write_text(
        "defaults: {security_owner: secops}\n"
        "owners: {secops: {name: SecOps}}\n"
        "workflows:\n"
        "  w1: {agents: [a], risk: extreme, approver: secops, detector: secops, responder: secops}\n"
    )
    out = _warden("run", env={"WARDEN_POLICY": str(policy)})
    assert out.returncode == 2
    assert f"{policy}: workflows.w1.risk: Input should be 'low', 'high' or 'critical'" in out.stderr
    assert "Traceback" not in out.stderr


def test_invalid_settings_are_named_without_a_traceback() -> None:
    out = _warden("run", env={"WARDEN_WEB_BIND": "no-port-here"})
    assert out.returncode != 0
    assert "WARDEN_WEB_BIND" in out.stderr and "Traceback" not in out.stderr


def _field_paths(schema: dict) -> set[str]:
    """Dotted names of every property in the event schema (one level of parts, as the contract has)."""
    defs = schema.get("$defs", {})
    paths: set[str] = set()
    for name, prop in schema["properties"].items():
        refs = [prop.get("$ref")] + [alt.get("$ref") for alt in prop.get("anyOf", [])]
        part = next((defs[r.rsplit("/", 1)[1]] for r in refs if r), None)
        if part and "properties" in part:
            paths |= {f"{name}.{sub}" for sub in part["properties"]}
        else:
            paths.add(name)
    return paths


def test_docs_events_md_documents_every_field_of_the_schema() -> None:
    from warden.contract.events import ActivityEvent

    docs = (REPO / "docs" / "events.md").read_text()
    missing = sorted(p for p in _field_paths(ActivityEvent.model_json_schema()) if f"`{p}`" not in docs)
    assert missing == []


def test_the_readme_documents_every_setting() -> None:
    from warden.runtime.settings import Settings

    readme = (REPO / "README.md").read_text()
    missing = sorted(f"WARDEN_{f.upper()}" for f in Settings.model_fields if f"WARDEN_{f.upper()}" not in readme)
    assert missing == []


def test_the_readme_has_exactly_two_set_up_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in setup.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2
    assert commands[0].endswith("warden demo") and commands[1].endswith("pytest -q")
    assert "README.md" in (REPO / ".ci" / "run").read_text()
