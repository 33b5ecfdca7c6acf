"""What the publishing and notifying containment actions put on the wire, read back from what they were handed:
the control record (quarantine, release), the revocation list entry, the step's notification, and the lint's
view of an action's parameters. No broker: `Services.publish` and `.notify` record their calls."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import pytest

from playbooks.actions import ACTIONS, RELEASE, RUNNABLE, checker
from playbooks.actions.base import ActionFailed, Credential, Services, StepContext
from playbooks.actions.control import QUARANTINED, RELEASED, control_record
from responders.incidents import IncidentView
from tests.support.action_context import incident, matrix
from warden.contract.findings import FindingOwners, OwnerRef
from warden.kit.secrets import resolve

NOW = datetime(2026, 11, 23, 17, 5, tzinfo=UTC)
SAM = OwnerRef(id="sam", name="Sam Okafor", kind="person", contacts={"slack": "U0SAM"})


class Recorder:
    """Stands in for the broker and the outbox: what each action asked for, in order."""

    def __init__(self, first: bool = True) -> None:
        self.published: list[tuple[str, bytes, bytes | None]] = []
        self.notified: list[tuple[str, int, OwnerRef, str]] = []
        self.first = first

    async def publish(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.published.append((topic, key, value))

    async def notify(self, key: str, incident_id: int, owner: OwnerRef, note: str) -> bool:
        self.notified.append((key, incident_id, owner, note))
        return self.first


def _ctx(rec: Recorder, *, credential: Credential | None = None, decided_by: str | None = None,
         view: IncidentView | None = None) -> StepContext:
    services = Services(http=cast(aiohttp.ClientSession, None), publish=rec.publish,  # no HTTP here
                        notify=rec.notify, secret=resolve, control_topic="ctl.topic", revocations_topic="rev.topic")
    return StepContext(key="warden-42-contain-1", incident=view or incident(), playbook="contain", index=1,
                       attempt=1, credential=credential, matrix=matrix(), services=services, now=NOW,
                       decided_by=decided_by)


@pytest.mark.parametrize(("name", "state"), [("quarantine_agent", QUARANTINED), ("release", RELEASED)])
async def test_quarantine_and_release_publish_the_agents_state_keyed_by_agent_by_who_decided(
    name: str, state: str,
) -> None:
    rec = Recorder()
    detail = await RUNNABLE[name].run(RUNNABLE[name].Params(), _ctx(rec, decided_by="sam"))
    [(topic, key, value)] = rec.published
    assert (topic, key) == ("ctl.topic", b"billing-agent")
    assert value is not None and json.loads(value) == {
        "agent_id": "billing-agent", "state": state, "incident_id": 42, "rule": "secret_out_of_scope",
        "at": NOW.isoformat(), "by": "sam"}
    assert detail == {"agent": "billing-agent", "state": state, "by": "sam", "topic": "ctl.topic"}


async def test_a_quarantine_an_auto_gate_let_run_is_by_warden() -> None:
    rec = Recorder()
    detail = await ACTIONS["quarantine_agent"].run(None, _ctx(rec, decided_by=None))
    [(_, _, value)] = rec.published
    assert value is not None and json.loads(value)["by"] == "warden" and detail["by"] == "warden"


def test_the_control_record_is_canonical_json() -> None:
    record = control_record("a", QUARANTINED, incident_id=1, rule="r", at=NOW, by="w")
    assert record == json.dumps(json.loads(record), sort_keys=True).encode()


async def test_the_revocation_list_publishes_the_credential_id_never_the_token() -> None:
    rec = Recorder()
    cred = Credential(id="kid-7", issuer="https://idp", token="secret-token")
    detail = await ACTIONS["revocation_list"].run(None, _ctx(rec, credential=cred))
    [(topic, key, value)] = rec.published
    assert (topic, key) == ("rev.topic", b"kid-7")
    assert value is not None and json.loads(value) == {
        "credential_id": "kid-7", "issuer": "https://idp", "incident_id": 42, "agent_id": "billing-agent",
        "rule": "secret_out_of_scope"}
    assert b"secret-token" not in value
    assert detail == {"credential_id": "kid-7", "topic": "rev.topic"}


@pytest.mark.parametrize("cred", [None, Credential(id=None, issuer="https://idp", token="t"),
                                  Credential(id="", issuer="https://idp", token="t")])
async def test_the_revocation_list_without_a_credential_id_fails_for_good_and_publishes_nothing(
    cred: Credential | None,
) -> None:
    rec = Recorder()
    with pytest.raises(ActionFailed) as failed:
        await ACTIONS["revocation_list"].run(None, _ctx(rec, credential=cred))
    assert failed.value.retryable is False and "no credential id" in failed.value.reason
    assert rec.published == []


@pytest.mark.parametrize("first", [True, False])
async def test_notify_records_one_notification_keyed_by_the_step_to_the_named_role(first: bool) -> None:
    rec = Recorder(first=first)
    params = ACTIONS["notify"].Params.model_validate({"role": "approver", "message": "contained"})
    detail = await ACTIONS["notify"].run(params, _ctx(rec))
    [(key, incident_id, owner, note)] = rec.notified
    assert (key, incident_id, owner.id, note) == ("warden-42-contain-1", 42, "secops", "contained")
    assert detail == {"to": "secops", "role": "approver", "recorded": "now" if first else "by an earlier run"}


async def test_notify_to_a_role_the_workflow_does_not_name_fails_for_good_and_notifies_nobody() -> None:
    rec = Recorder()
    view = replace(incident(), owners=FindingOwners(approver=SAM, responder=SAM))
    params = ACTIONS["notify"].Params.model_validate({"role": "data_owner", "message": "x"})
    with pytest.raises(ActionFailed) as failed:
        await ACTIONS["notify"].run(params, _ctx(rec, view=view))
    assert failed.value.retryable is False and "names no data_owner" in failed.value.reason
    assert rec.notified == []


def test_the_release_is_runnable_but_never_a_playbook_step() -> None:
    assert RUNNABLE["release"] is RELEASE and "release" not in ACTIONS
    assert set(ACTIONS) == {"revoke_token", "webhook", "quarantine_agent", "revocation_list", "notify"}


def test_the_lint_checks_the_parameter_model_then_the_actions_own_checks() -> None:
    check = checker(ACTIONS["notify"])
    assert check({"role": "approver", "message": "hi"}, matrix()) == []
    [(where, why)] = check({"role": "approver", "message": "hi", "extra": 1}, matrix())
    assert where == "extra" and "xtra" in why
    errors: list[tuple[str, str]] = checker(ACTIONS["revoke_token"])({"issuer": "corp"}, matrix())
    assert [w for w, _ in errors] == ["issuer"]
    nested: Any = checker(ACTIONS["webhook"])({"url": "https://h.example", "secret": "env:X",
                                               "payload": {"k": [1]}}, matrix())
    assert nested and all(where.startswith("payload.k") for where, _ in nested)


@pytest.mark.parametrize(("name", "idempotent", "uses_token", "describes"), [
    ("quarantine_agent", True, False, "quarantine the agent (warden.control)"),
    ("release", True, False, "release the agent's quarantine (warden.control)"),
    ("revocation_list", True, False, "add the credential id to the revocation list (warden.revocations)"),
    ("notify", True, False, "notify the data_owner"),
])
def test_each_action_says_whether_it_may_be_rerun_needs_the_token_and_what_it_will_do(
    name: str, idempotent: bool, uses_token: bool, describes: str,
) -> None:
    action = RUNNABLE[name]
    params = action.Params.model_validate({"role": "data_owner", "message": "m"} if name == "notify" else {})
    assert (action.idempotent, action.uses_token, action.describe(params)) == (idempotent, uses_token, describes)
    assert action.check(params, matrix()) == []


def test_a_credential_never_shows_its_token_when_printed() -> None:
    cred = Credential(id="kid-7", issuer="https://idp", token="secret-token")
    assert "secret-token" not in repr(cred) and "kid-7" in repr(cred)


async def test_the_revocation_list_entry_is_canonical_json() -> None:
    rec = Recorder()
    await ACTIONS["revocation_list"].run(None, _ctx(rec, credential=Credential(id="k", issuer=None, token=None)))
    [(_, _, value)] = rec.published
    assert value is not None and value == json.dumps(json.loads(value), sort_keys=True).encode()
