"""The README's demo command: a fresh worker on the embedded broker ends with the JSON line and exit 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import _warden
from tests.support.observability_checks import dashboard_exprs, names_in, served_names

pytestmark = pytest.mark.integration


def test_demo_delivers_every_stage_on_the_embedded_defaults(tmp_path: Path) -> None:
    served = tmp_path / "metrics.txt"
    out = _warden("demo", "--metrics-out", str(served), env={"WARDEN_DATA_DIR": str(tmp_path),
                                                            "WARDEN_WEB_BIND": "127.0.0.1:0"}, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"events", "invalid", "findings", "alerts"} <= summary.keys()
    assert all(summary[k] > 0 for k in ("events", "invalid", "findings", "alerts", "contained")), summary
    # The scenario's two critical findings carry tokens issued by the demo's real oidc-provider; both are revoked,
    # as its introspection confirms, under the example policy's auto_if_critical gate.
    assert summary["tokens_revoked"] == 2, out.stderr[-3000:]
    assert "started the demo OAuth server (oidc-provider)" in out.stderr
    # One identity change held by a gateway until the named approver approved it in the local Slack API server;
    # it then ran and raised no finding.
    assert summary["approved_before_action"] == 1, out.stderr[-3000:]
    held = out.stderr.index("gateway holds grant_role on user:dana by iam-agent-1: pending (approver jordan")
    assert held < out.stderr.index("approved in Slack by jordan (U0JORDAN): the gateway now runs grant_role")
    assert "-held-grant-change raised 0 findings" in out.stderr
    # Each contained incident's timeline has its steps done in playbook order (deliveries may come between them).
    timelines = [line for line in out.stderr.splitlines() if "timeline of incident" in line]
    assert len(timelines) == 2, out.stderr[-3000:]
    for line in timelines:
        done = [part.split("containment_step_done ")[1].split()[0].strip('"}')
                for part in line.split(" → ") if part.startswith("containment_step_done ")]
        assert done == ["revoke_token", "revocation_list", "quarantine_agent", "notify"], line
    assert "started the embedded Tansu broker" in out.stderr
    assert "created topics warden.activity, warden.findings, warden.activity.dlq" in out.stderr
    assert "ALERT [" in out.stderr and "responder=" in out.stderr
    assert "sk-live-a1b2c3d4e5f6g7h8i9j0" not in out.stderr + out.stdout  # the scenario's bearer token
    # Every series the Grafana dashboard reads is one this worker served by the end of the demo.
    exported = served_names(served.read_text())
    assert set().union(*(names_in(e) for e in dashboard_exprs())) - exported == set()
