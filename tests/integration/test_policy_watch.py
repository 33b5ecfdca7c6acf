"""The policy watcher on its own: a settled change is swapped in, an invalid one keeps the old policy and alerts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.runtime.catalogue import load as load_policy
from service.runtime.policy_holder import PolicyHolder
from service.runtime.policy_watch import PolicyWatcher
from service.runtime.settings import BUNDLED_POLICY
from tests.support.isolated_worker import RecordingResponder
from tests.support.metrics import metric_value
from warden.telemetry import metrics

Watched = tuple[Path, PolicyHolder, RecordingResponder, PolicyWatcher]


@pytest.fixture
def watched(tmp_path: Path) -> Watched:
    folder = tmp_path / "policy"
    shutil.copytree(BUNDLED_POLICY, folder)
    holder = PolicyHolder(load_policy(folder))
    responder = RecordingResponder()
    return folder, holder, responder, PolicyWatcher(folder, holder, responder.handle, interval_s=0.01)


def live_sha_labels() -> set[str]:
    return {s.labels["sha256"] for m in metrics.POLICY_INFO.collect() for s in m.samples}


async def settle(watcher: PolicyWatcher) -> None:
    """Two polls: one to see the change, one to see it hold still."""
    await watcher.check()
    await watcher.check()


async def test_an_unchanged_policy_is_never_swapped(watched: Watched) -> None:
    _, holder, responder, watcher = watched
    live = holder.current
    await settle(watcher)
    await settle(watcher)
    assert holder.current is live and responder.findings == []


async def test_a_valid_change_is_swapped_in_once_the_files_hold_still(watched: Watched) -> None:
    folder, holder, responder, watcher = watched
    await settle(watcher)
    old = holder.current
    rules = folder / "20-rules.yaml"
    rules.write_text(rules.read_text().replace("unapproved_tool: { severity: medium }",
                                               "unapproved_tool: { severity: low }"))
    await watcher.check()
    assert holder.current is old  # seen once: it may still be being written
    await watcher.check()
    new = holder.current
    assert new.sha256 != old.sha256 and new.matrix.rules.builtin["unapproved_tool"].severity == "low"
    assert metric_value(metrics.POLICY_RELOAD_OK) == 1
    assert new.sha256 in live_sha_labels() and old.sha256 not in live_sha_labels()
    assert responder.findings == []


async def test_an_invalid_change_keeps_the_old_policy_and_alerts_the_security_owner_once(
    watched: Watched,
) -> None:
    folder, holder, responder, watcher = watched
    await settle(watcher)
    live = holder.current
    workflows = folder / "10-workflows.yaml"
    good = workflows.read_text()
    workflows.write_text(good.replace("responder: finance-ops", "responder: nobody"))
    await settle(watcher)
    assert holder.current is live
    assert metric_value(metrics.POLICY_RELOAD_OK) == 0
    [alert] = responder.findings
    assert (alert.rule, alert.severity.value, alert.owners.responder.id) == ("policy_invalid", "critical", "secops")
    assert alert.policy_sha256 == live.sha256
    assert str(workflows) in alert.evidence["issue_1"]
    assert "workflows.billing-agent.responder" in alert.evidence["issue_1"]
    await settle(watcher)
    assert len(responder.findings) == 1  # the same broken files are not re-alerted on every poll
    workflows.write_text(good)
    await settle(watcher)
    assert holder.current.sha256 == live.sha256 and metric_value(metrics.POLICY_RELOAD_OK) == 1


async def test_a_deleted_policy_keeps_the_old_one_live(watched: Watched) -> None:
    folder, holder, responder, watcher = watched
    await settle(watcher)
    live = holder.current
    shutil.rmtree(folder)
    await settle(watcher)
    assert holder.current is live
    [alert] = responder.findings
    assert "does not exist" in alert.evidence["issue_1"]
