"""The tool catalogue: a plain tool call to an identity_admin or secret_store tool raises the existing detectors."""

from __future__ import annotations

from streams.detectors import DetectorState, detect
from tests.support.matrix_builder import approval, tool
from tests.support.scope_builder import scoped
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.contract.matrix import ToolSpec
from warden.policy.tools import ToolCatalogue

POLICY = scoped()


def rules(*events: ActivityEvent) -> list[Finding]:
    state = DetectorState()
    return [f for e in events for f in detect(e, POLICY, state)]


def grant(user: str, at: float = 0.0, **fields: object) -> ActivityEvent:
    return tool("iam-agent", "directory.grant_role", at, tool={"arguments": {"user": user, "role": "viewer"}},
                **fields)


def test_an_identity_admin_tool_call_without_approval_is_an_unreviewed_identity_change() -> None:
    [f] = rules(grant("user:ana"))
    assert (f.rule, f.target, f.evidence["operation"]) == ("unreviewed_identity_change", "user:ana", "grant_role")
    assert f.evidence["tool"] == "directory.grant_role"


def test_the_named_approval_of_its_target_covers_the_tool_call() -> None:
    assert rules(approval("iam-agent", "jordan", "user:ana"), grant("user:ana", at=60)) == []


def test_an_approval_from_someone_else_does_not() -> None:
    [f] = rules(approval("iam-agent", "marco", "user:ana"), grant("user:ana", at=60))
    assert "not by the named approver" in f.evidence["reason"]


def test_an_operation_the_scope_does_not_gate_needs_no_approval() -> None:
    pol = scoped(top={"tools": {"directory.grant_role": {"categories": ["identity_admin"], "resource": "user",
                                                         "operation": "remove_from_group"}}})
    assert detect(grant("user:ana"), pol, DetectorState()) == []


def test_a_secret_store_tool_call_outside_the_grant_is_secret_access() -> None:
    [f] = rules(tool("iam-agent", "vault.read", tool={"arguments": {"path": "vault://prod/db-root"}}))
    assert (f.rule, f.target, f.evidence["tool"]) == ("secret_access", "vault://prod/db-root", "vault.read")


def test_a_secret_store_tool_call_inside_the_grant_raises_nothing() -> None:
    assert rules(tool("iam-agent", "vault.read", tool={"arguments": {"path": "vault://iam/writer"}})) == []


def test_a_secret_store_call_naming_no_secret_fails_closed() -> None:
    [f] = rules(tool("iam-agent", "vault.read", tool={"arguments": {"path": 3}}))
    assert f.rule == "secret_access" and f.evidence["secret"] == "(the call names no secret)"


def test_a_catalogue_glob_files_every_matching_tool() -> None:
    entry = POLICY.tools.entry("web.get")
    assert entry is not None and {c.value for c in entry.categories} == {"untrusted_input"}
    assert POLICY.tools.entry("webget") is None
    assert POLICY.tools.entry("directory.lookup_user") is None


def test_a_tool_found_by_a_glob_is_found_again_and_an_exact_name_comes_first() -> None:
    catalogue = ToolCatalogue({"files.delete*": ToolSpec(categories=["destructive"]),
                               "files.delete_all": ToolSpec(categories=["destructive", "identity_admin"])})
    for _ in range(2):  # the second lookup is answered from the cache: the same answer
        entry = catalogue.entry("files.delete_one")
        assert entry is not None and entry.name == "files.delete*"
        assert catalogue.entry("mail.read") is None
    exact = catalogue.entry("files.delete_all")
    assert exact is not None and exact.name == "files.delete_all"
