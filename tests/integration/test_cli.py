"""The `warden` command as a user meets it: schema output, and start-up failures as one clear line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.support.kafka_helpers import event

REPO = Path(__file__).resolve().parents[2]


def _warden(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True,
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
    assert {"tool.result", "tool.result_truncated"} <= _field_paths(schema)  # provenance: what the agent read
    validator.validate(event("a1", tool={"name": "web.fetch", "result": {"body": "x"}, "result_truncated": True}))
    validator.validate(event("a1", tool={"name": "web.fetch", "result": "plain text"}))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(event("a1", tool={"name": "web.fetch", "result": 42}))


def test_an_unreachable_broker_is_one_line_naming_the_address_and_a_non_zero_exit() -> None:
    out = _warden("run", env={"WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "WARDEN_WEB_BIND": "127.0.0.1:0"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in lines[0]
    assert "Traceback" not in out.stderr


def test_a_missing_policy_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    out = _warden("run", env={"WARDEN_POLICY": str(missing), "WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
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
    out = _warden("run", env={"WARDEN_POLICY": str(policy), "WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert out.returncode == 2
    assert f"{policy}:4: workflows.w1.risk: Input should be 'low', 'high' or 'critical'" in out.stderr  # file:line
    assert "Traceback" not in out.stderr


def test_invalid_settings_are_named_without_a_traceback() -> None:
    out = _warden("run", env={"WARDEN_WEB_BIND": "no-port-here"})
    assert out.returncode != 0
    assert "WARDEN_WEB_BIND" in out.stderr and "Traceback" not in out.stderr


def _field_paths(schema: dict[str, Any]) -> set[str]:
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


def test_docs_events_md_lists_every_dead_letter_reason_code_and_header_the_code_writes() -> None:
    runtime = REPO / "service" / "runtime"
    sources = [*(REPO / "streams" / "ingest").glob("*.py"), runtime / "app.py", *(runtime / "ingest").glob("*.py")]
    code = "\n".join(path.read_text() for path in sources)
    reasons = set(re.findall(r'Rejection\(\s*"([a-z_]+)"', code)) | set(
        re.findall(r'dead_letter\(\s*\w+,\s*"([a-z_]+)"', code))
    headers = set(re.findall(r'"(warden\.[a-z_]+)":', code)) | set(re.findall(r'headers\["(warden\.[a-z_]+)"\]', code))
    assert {"not_an_object", "invalid_finding", "processing_error"} <= reasons and "warden.truncated_from" in headers
    docs = (REPO / "docs" / "events.md").read_text()
    assert sorted(name for name in reasons | headers if f"`{name}`" not in docs) == []


# Defaults the code derives at run time, which the README's table describes in words: (its words, the code's field).
DESCRIBED_DEFAULTS: dict[str, tuple[str, object]] = {
    "policy": ("the bundled example (`warden/examples/policy`)", "BUNDLED_POLICY"),
    "database_url": ("SQLite in `WARDEN_DATA_DIR`", None),
    "seal_key": ("generated in `WARDEN_DATA_DIR/seal.key`", None),
    "notifiers": ("`slack` with `WARDEN_SLACK_TOKEN`, else `console`", None),
    "review_digest_interval": ("`1h`", timedelta(hours=1)),
}
TEST_ONLY_VARIABLES = {"WARDEN_TEST_KAFKA_BOOTSTRAP", "WARDEN_TEST_DATABASE_URL",
                       "WARDEN_TEST_KAFKA_SECURITY"}  # the suite's, not Settings'


def _settings_table(readme: str) -> dict[str, str]:
    """Each variable of the README's Configuration table, with its documented default (shared cells split)."""
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `WARDEN_")]
    table: dict[str, str] = {}
    for cells in rows:
        variables = re.findall(r"`(WARDEN_[A-Z0-9_]+)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(", ")] if len(variables) > 1 else [cells[1].strip()]
        if len(defaults) == 1:
            defaults *= len(variables)
        assert len(defaults) == len(variables), f"{cells[0]}: one default per variable, or one for all"
        for variable, default in zip(variables, defaults, strict=True):
            assert variable not in table, f"{variable} is in the table twice"
            table[variable] = default
    return table


def _matches(documented: str, default: object) -> bool:
    """A literal default as the table writes it (`30`, `./data`, unset) against the code's value."""
    if default is None:
        return documented == "unset"
    literal = documented.removeprefix("`").removesuffix("`")
    if documented != f"`{literal}`":
        return False
    if isinstance(default, Path):
        return Path(literal) == default
    if isinstance(default, bool):
        return literal == str(default).lower()
    if isinstance(default, int | float):
        return float(literal) == default
    return literal == default


def test_the_readme_settings_table_and_the_code_agree_on_every_variable_and_default() -> None:
    from responders.notifiers.registry import NOTIFIERS
    from service.runtime.settings import BUNDLED_POLICY, Settings

    readme = (REPO / "README.md").read_text()
    table = _settings_table(readme)
    fields = {f"WARDEN_{name.upper()}": name for name in Settings.model_fields}
    # A notifier documents its own variables in its package (tests/unit/responders/test_notifier_registry.py); the
    # README's table lists every core setting, and Slack's, the shipped default.
    in_packages = {f"WARDEN_{name.upper()}" for p in NOTIFIERS.values() for name in p.settings.model_fields}
    slack = {f"WARDEN_{name.upper()}" for name in NOTIFIERS["slack"].settings.model_fields}
    assert slack and slack <= in_packages < fields.keys()
    assert sorted(fields.keys() - in_packages - table.keys()) == [], "settings the README's table does not list"
    assert sorted(slack - table.keys()) == [], "Slack's settings the README's table does not list"
    assert sorted(table.keys() - fields.keys()) == [], "the README's table lists variables the code does not read"
    named = set(re.findall(r"\bWARDEN_[A-Z0-9_]*[A-Z0-9]\b", readme))
    assert sorted(named - fields.keys() - TEST_ONLY_VARIABLES) == [], "the README names variables nothing reads"
    wrong = []
    for variable, name in fields.items():
        if variable not in table:  # a notifier's, documented in its package
            continue
        default = Settings.model_fields[name].default
        if name in DESCRIBED_DEFAULTS:
            words, expected = DESCRIBED_DEFAULTS[name]
            ok = table[variable] == words and default == (BUNDLED_POLICY if expected == "BUNDLED_POLICY" else expected)
        else:
            ok = _matches(table[variable], default)
        if not ok:
            wrong.append(f"{variable}: README says {table[variable]}, the code {default!r}")
    assert wrong == []


def test_the_readme_has_exactly_two_set_up_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in setup.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2
    # the suite runs on parallel pytest-xdist workers (each with its own broker and PostgreSQL)
    assert commands[0].endswith("warden demo")
    assert re.search(r" && \.venv/bin/pytest -q -n [1-9][0-9]* --dist worksteal$", commands[1]), commands[1]
    assert "README.md" in (REPO / ".ci" / "run").read_text()
