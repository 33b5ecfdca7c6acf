"""OCSF 1.9 in the audit export: findings carry the acting agent as an `ai_agent`, and every record the
`record_integrity` profile's attestation with its timeline entry's place in the hash chain (fingerprint, previous
entry, chain id). Validated against the OCSF subset shipped in tests/support/data/ocsf (its source files are named
there), and
the chain an exported copy carries is checked on its own, as a SIEM would."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from responders.audit import GENESIS, entry_hash, timeline_content
from responders.ocsf import OCSF_VERSION, detection_finding, timeline_record

OCSF = Path(__file__).resolve().parents[2] / "support" / "data" / "ocsf"
SCHEMA = json.loads((OCSF / "ocsf-1.9-subset.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def _chain(incident_id: int, kinds: list[str]) -> list[dict[str, Any]]:
    """Timeline entries as `entry_json` shows them, chained exactly as the store chains them."""
    entries, prev = [], GENESIS
    for seq, kind in enumerate(kinds, start=1):
        at = T0 + timedelta(seconds=seq)
        detail = {"finding_id": f"f{seq}"} if kind in ("opened", "grouped") else {"action": "quarantine_agent"}
        content = timeline_content(incident_id=incident_id, at=at, kind=kind, actor="warden", identity=None,
                                   policy_sha256="sha", detail=detail)
        digest = entry_hash(str(incident_id), seq, prev, content)
        entries.append({"seq": seq, "at": at.isoformat(), "kind": kind, "actor": "warden", "identity": None,
                        "policy_sha256": "sha", "detail": detail, "prev_hash": prev, "hash": digest})
        prev = digest
    return entries


INCIDENT = {"id": 7, "status": "open", "title": "Tool outside the workflow's allowed set",
            "agent_id": "billing-agent-1", "target": "shell.exec", "workflow": "billing-agent",
            "frameworks": ["OWASP-ASI02"], "tags": ["scope"],
            "policy_sha256": "sha", "owners": {"responder": {"id": "finance-ops"}}}


def _finding(entry: dict[str, Any], grouped: bool = False) -> dict[str, Any]:
    return detection_finding(finding_id="f1", event_id="otel:ab:cd", rule="unapproved_tool", severity="high", ts=T0,
                             recorded_at=T0, evidence={"tool": "shell.exec"}, grouped=grouped, incident=INCIDENT,
                             entry=entry)


def _errors(record: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(record)]


def test_a_finding_is_an_ocsf_1_9_detection_finding_with_its_ai_agent_and_its_chain_link() -> None:
    opened, grouped = _chain(7, ["opened", "notified", "grouped"])[0::2]
    record = _finding(opened)
    assert _errors(record) == []
    assert record["metadata"]["version"] == OCSF_VERSION == "1.9.0"
    assert set(record["metadata"]["profiles"]) == {"ai_operation", "record_integrity"}
    assert record["ai_agent"] == {"uid": "billing-agent-1", "name": "billing-agent-1", "type_id": 0, "type": "Unknown"}
    [att] = record["attestation_list"]
    assert att == {"uid": "warden-incident-7:1", "chain_uid": "warden-incident-7", "authority_uid": "warden",
                   "fingerprint": {"algorithm_id": 3, "algorithm": "SHA-256", "value": opened["hash"]}}
    [later] = _finding(grouped, grouped=True)["attestation_list"]
    assert later["prev_event"] == {"uid": "warden-incident-7:2",
                                   "fingerprint": {"algorithm_id": 3, "algorithm": "SHA-256",
                                                   "value": grouped["prev_hash"]}}


def test_every_timeline_record_carries_its_link_and_a_copy_of_the_chain_verifies_on_its_own() -> None:
    entries = _chain(3, ["opened", "notified", "containment_step_done", "acknowledged"])
    records = [timeline_record(e, 3) for e in entries]
    assert [_errors(r) for r in records] == [[]] * 4
    links = [r["attestation_list"][0] for r in records]
    assert "prev_event" not in links[0]  # the genesis entry has none
    for before, after in itertools.pairwise(links):
        assert after["prev_event"]["fingerprint"]["value"] == before["fingerprint"]["value"]
        assert after["chain_uid"] == before["chain_uid"] == "warden-incident-3"
    for r in records:  # the fingerprint is the chain hash of the record's own fields
        content = timeline_content(incident_id=r["incident_id"], at=datetime.fromisoformat(r["at"]), kind=r["kind"],
                                   actor=r["actor"], identity=r["identity"], policy_sha256=r["policy_sha256"],
                                   detail=r["detail"])
        assert entry_hash("3", r["seq"], r["prev_hash"], content) == r["attestation_list"][0]["fingerprint"]["value"]


@pytest.mark.parametrize(("damage", "where"), [
    (lambda r: r["ai_agent"].pop("uid"), "ai_agent"),
    (lambda r: r["ai_agent"].update(type_id=7), "ai_agent/type_id"),
    (lambda r: r["ai_agent"].update(session="s1"), "ai_agent"),  # not an ai_agent attribute in OCSF
    (lambda r: r["attestation_list"][0].pop("fingerprint"), "attestation_list/0"),
    (lambda r: r["attestation_list"][0]["fingerprint"].update(value="not-hex"), "attestation_list/0/fingerprint"),
    (lambda r: r["metadata"].update(profiles=["ai_operation"]), "metadata/profiles"),
    (lambda r: r["metadata"].update(version="1.3.0"), "metadata/version"),
    (lambda r: r.update(class_uid=2001), "class_uid"),
])
def test_the_schema_refuses_what_ocsf_does_not_allow(damage: Any, where: str) -> None:
    record = copy.deepcopy(_finding(_chain(1, ["opened"])[0]))
    damage(record)
    assert _errors(record), f"a broken {where} was accepted"
