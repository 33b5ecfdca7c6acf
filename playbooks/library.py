"""The shipped playbooks: one YAML file each under `playbooks/library/`, validated like a policy's own."""

from __future__ import annotations

from pathlib import Path

import yaml

from warden.contract.containment import Playbook

LIBRARY = Path(__file__).resolve().parent / "library"  # package data: ships in the wheel


def shipped() -> dict[str, Playbook]:
    """Every shipped playbook by id (its file name). A broken one is a bug in this build: it raises."""
    return {path.stem: Playbook.model_validate(yaml.safe_load(path.read_text()))
            for path in sorted(LIBRARY.glob("*.yaml"))}
