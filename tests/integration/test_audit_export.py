"""The optional `warden.audit` export on a real broker (both backends): timeline entries with their chain hashes, and
each finding as an OCSF Detection Finding; a planted secret appears in none of it; a second pass adds nothing."""

from __future__ import annotations

import json
import uuid

import pytest

from responders.audit_export import AuditExporter
from responders.incidents import Status
from service.runtime.settings import Settings
from service.runtime.topics import ensure_topics
from tests.support.containment_helpers import containment_policy, violation
from tests.support.incident_helpers import FakeClock, running
from tests.support.kafka_helpers import produce, read_topic
from tests.unit.responders.test_ocsf import VALIDATOR
from warden.contract.actors import Actor
from warden.contract.findings import OwnerRef

pytestmark = pytest.mark.integration
PLANTED = "sk-live0PLANTEDsecret0000000000"


async def test_findings_go_out_as_ocsf_detection_findings_and_entries_with_their_hashes(
        incident_settings: Settings, kafka_bootstrap: str) -> None:
    topic = f"audit-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, [topic], 1)
    clock = FakeClock()
    policy = containment_policy([])
    async with running(incident_settings, clock=clock) as responder:
        finding = violation(policy, name=f"shell.exec token={PLANTED}", arguments={"key": PLANTED})
        await responder.store.incidents.record_finding(finding, clock())
        await responder.store.incidents.transition(1, Status.open, Status.acknowledged, owner=OwnerRef(id="iam-team"),
                                                   by=Actor("slack", "U0ALEX"), note="ack", now=clock())

        async def publish(records: list[tuple[bytes, bytes]]) -> None:
            await produce(kafka_bootstrap, topic, records)

        exporter = AuditExporter(responder.engine, publish, clock, settle_s=0)
        await responder.outbox.loop.stop()  # no `notified` entries arriving while we count
        sent = await exporter.export()
        assert sent >= 2 and await exporter.export() == 0  # the cursor moved: nothing is published twice
        entries = await responder.store.timeline.entries(1)
    records = [json.loads(r.value) for r in await read_topic(kafka_bootstrap, topic, expect=sent + 1)]
    assert PLANTED not in json.dumps(records)
    timeline = [r for r in records if r.get("type") == "warden.timeline"]
    assert [(r["seq"], r["kind"], r["hash"]) for r in timeline] == [(e.seq, e.kind, e.hash) for e in entries]
    [ocsf] = [r for r in records if r.get("class_uid") == 2004]
    assert (ocsf["type_uid"], ocsf["activity_id"], ocsf["category_uid"]) == (200401, 1, 2)
    assert ocsf["finding_info"]["uid"] == finding.finding_id
    assert ocsf["finding_info"]["analytic"] == {"uid": "unapproved_tool", "name": "unapproved_tool", "type_id": 1,
                                                "type": "Rule"}
    assert ocsf["severity_id"] == {"low": 2, "medium": 3, "high": 4, "critical": 5}[finding.severity.value]
    assert ocsf["finding_info"]["related_events"] == [{"uid": finding.event_id}]
    assert ocsf["unmapped"]["policy_sha256"] == "sha-containment" and ocsf["metadata"]["product"]["name"] == "Warden"
    # OCSF 1.9: the agent as an ai_agent, and each record's link in the incident's hash chain (record_integrity).
    assert [e.message for r in records for e in VALIDATOR.iter_errors(r)] == []
    assert ocsf["ai_agent"]["uid"] == finding.agent_id
    assert ocsf["attestation_list"][0]["fingerprint"]["value"] == entries[0].hash  # the `opened` entry
    assert [r["attestation_list"][0]["fingerprint"]["value"] for r in timeline] == [e.hash for e in entries]
