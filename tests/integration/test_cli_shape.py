"""One shape for every command: `-h`, `--output text|json|jsonl`, documented in docs/cli.md with its exit codes,
click's shell completion as documented, and every message naming the distribution `warden-incident-response`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from service.cli import main

REPO = Path(__file__).resolve().parents[2]
DOCS = (REPO / "docs" / "cli.md").read_text()
# The policy group's section is written with the policy-authoring work; every other command is checked here.
ELSEWHERE = {"policy"}
# Commands with no list to print: the worker, the demo and the schema print their own fixed shapes.
NO_OUTPUT = {"run", "demo", "schema", "db upgrade"}


def commands(group: click.Group = main, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from commands(command, f"{full} ")
        else:
            yield full, command


def test_h_is_help_on_the_group_and_every_command() -> None:
    assert CliRunner().invoke(main, ["-h"]).output.startswith("Usage: main [OPTIONS] COMMAND")
    for name, _ in commands():
        result = CliRunner().invoke(main, [*name.split(), "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output, name


def test_every_command_but_the_worker_s_has_output_text_json_jsonl() -> None:
    missing = []
    for name, command in commands():
        if name in NO_OUTPUT or name.split()[0] in ELSEWHERE:
            continue
        option = next((p for p in command.params if p.name == "output"), None)
        if option is None or not isinstance(option.type, click.Choice) or list(option.type.choices) != [
                "text", "json", "jsonl"]:
            missing.append(name)
    assert missing == []


def test_docs_cli_md_lists_every_command_with_exit_codes() -> None:
    undocumented = [name for name, _ in commands()
                    if name.split()[0] not in ELSEWHERE and f"warden {name}" not in DOCS]
    assert undocumented == []
    for section in ("Worker and demo", "Replay", "Incidents, approvals and audit", "Dead letters"):
        body = DOCS.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
        assert "exit" in body.lower(), section


def test_the_documented_completion_line_completes_commands_and_reason_codes() -> None:
    assert 'eval "$(_WARDEN_COMPLETE=bash_source warden)"' in DOCS
    warden = [str(Path(sys.executable).parent / "warden")]  # the console script, as a shell runs it
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    script = subprocess.run(warden, env={**env, "_WARDEN_COMPLETE": "bash_source"}, capture_output=True, text=True,
                            cwd=REPO, timeout=60, check=False).stdout
    assert "_warden_completion()" in script and "complete -o nosort -F _warden_completion" in script

    def complete(words: str) -> list[str]:
        out = subprocess.run(warden, env={**env, "_WARDEN_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                          "COMP_CWORD": str(len(words.split()) - 1)},
                             capture_output=True, text=True, cwd=REPO, timeout=60, check=False).stdout
        return [line.split(",", 1)[1] for line in out.splitlines()]

    assert complete("warden inc") == ["incident", "incidents"]
    assert complete("warden dlq replay --reason malformed_j") == ["malformed_json"]


def test_every_message_and_doc_names_the_distribution_not_warden_on_pypi() -> None:
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO, check=True).stdout
    wrong = []
    for rel in tracked.splitlines():
        path = REPO / rel
        if path.suffix not in {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".cfg", ""} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        wrong += [f"{rel}: {m.group()}" for m in re.finditer(r"(?<![\w./-])warden\[[a-z,]+\]", text)]
        wrong += [f"{rel}: {m.group()}" for m in re.finditer(r"pip install (?:-U )?['\"]?warden(?![\w-])", text)]
    assert wrong == []
