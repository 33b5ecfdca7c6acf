"""The Helm chart renders (Helm's own engine, offline) and only sets WARDEN_* variables that Warden reads."""

from __future__ import annotations

from pathlib import Path

import yaml
from helm_python import Chart

from warden.runtime.settings import BUNDLED_POLICY, Settings

REPO = Path(__file__).resolve().parent.parent


def _render(values: dict) -> dict[str, dict]:
    rendered = Chart.load(REPO / "helm" / "warden").render(values=values, name="t")
    return {Path(k).name: yaml.safe_load(v) for k, v in rendered.items() if v.strip()}


def test_chart_renders_the_example_matrix_and_known_settings_only() -> None:
    files = {p.name: p.read_text() for p in sorted(BUNDLED_POLICY.glob("*.yaml"))}
    docs = _render({"policy": {"files": files}, "slack": {"existingSecret": "slack", "apiUrl": "http://s"}})
    assert set(docs["configmap.yaml"]["data"]) == set(files)
    assert docs["configmap.yaml"]["data"]["10-workflows.yaml"] == files["10-workflows.yaml"]
    [container] = docs["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in container["env"]}
    known = {f"WARDEN_{f.upper()}" for f in Settings.model_fields}
    assert names - known == set()
    assert {"WARDEN_KAFKA_BOOTSTRAP", "WARDEN_POLICY", "WARDEN_DATABASE_URL", "WARDEN_SLACK_TOKEN"} <= names

