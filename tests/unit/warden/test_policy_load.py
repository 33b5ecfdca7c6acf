"""Loading the matrix: a folder merges in name order, and every error names its file, path and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.runtime.catalogue import load as load_policy
from service.runtime.settings import BUNDLED_POLICY
from warden.contract.containment import Gate
from warden.contract.matrix import PlaybookBinding
from warden.policy import PolicyError

OWNERS = """
version: 1
defaults: {security_owner: secops}
owners:
  secops: {name: SecOps, kind: team, contacts: {slack: C1}}
  ann: {name: Ann, contacts: {slack: U1}}
"""
WORKFLOW = """
workflows:
  w1:
    agents: [a1]
    approver: ann
    detector: secops
    responder: secops
    scope: {tools: [kb.*]}
"""


def _write(folder: Path, **files: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name, body in files.items():
        (folder / name.replace("_", "-", 1)).write_text(body)
    return folder


def test_a_folder_merges_in_name_order_and_a_later_file_wins_a_key(tmp_path: Path) -> None:
    override = ("workflows:\n"
                "  w1: {agents: [a1], approver: ann, detector: secops, responder: ann, scope: {tools: [x]}}\n")
    files = {"00_owners.yaml": OWNERS, "10_wf.yaml": WORKFLOW, "20_override.yml": override}
    folder = _write(tmp_path / "p", **files)
    policy = load_policy(folder)
    assert policy.matrix.workflows["w1"].responder == "ann"
    assert policy.matrix.workflows["w1"].scope.tools == ["x"]
    assert policy.workflow_id_for("a1") == "w1" and policy.workflow_id_for("zz") is None
    assert len(policy.files) == 3


def test_the_sha256_changes_with_any_byte_of_any_file(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", **{"00_owners.yaml": OWNERS, "10_wf.yaml": WORKFLOW})
    before = load_policy(folder).sha256
    (folder / "10-wf.yaml").write_text(WORKFLOW + "\n# a comment\n")
    assert load_policy(folder).sha256 != before


def test_a_schema_error_names_the_file_that_defined_the_entry(tmp_path: Path) -> None:
    bad = WORKFLOW.replace("agents: [a1]", "agents: [a1]\n    mode: autonomous")
    folder = _write(tmp_path / "p", **{"00_owners.yaml": OWNERS, "10_wf.yaml": bad})
    with pytest.raises(PolicyError) as err:
        load_policy(folder)
    [issue] = err.value.issues
    assert issue.file == str(folder / "10-wf.yaml")
    assert issue.path == "workflows.w1.mode"
    assert "'chat' or 'agentic'" in issue.reason


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", **{"00_owners.yaml": OWNERS, "10_wf.yaml": "workflows:\n  w1: [unclosed\n"})
    with pytest.raises(PolicyError) as err:
        load_policy(folder)
    [issue] = err.value.issues
    assert issue.file.endswith("10-wf.yaml") and (issue.line, issue.path) == (3, "")  # a line is not a path
    assert "invalid YAML" in issue.reason


def test_an_undefined_owner_is_located_where_it_is_referenced(tmp_path: Path) -> None:
    wf = WORKFLOW.replace("approver: ann", "approver: bob")
    folder = _write(tmp_path / "p", **{"00_owners.yaml": OWNERS, "10_wf.yaml": wf})
    with pytest.raises(PolicyError) as err:
        load_policy(folder)
    messages = [str(i) for i in err.value.issues]
    where = f"{folder / '10-wf.yaml'}:5: workflows.w1.approver"  # file:line: path
    assert f"{where}: owner 'bob' is referenced but not defined under owners" in messages


def test_a_bad_duration_is_explained(tmp_path: Path) -> None:
    body = OWNERS + WORKFLOW + "    escalation: [{owner: secops, ack_timeout: soon}]\n"
    folder = _write(tmp_path / "p", **{"00_all.yaml": body})
    with pytest.raises(PolicyError) as err:
        load_policy(folder)
    assert any(i.path == "workflows.w1.escalation.0.ack_timeout" and "'soon' is not a duration" in i.reason
               for i in err.value.issues)


def test_an_empty_folder_and_a_non_mapping_file_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PolicyError, match=r"holds no \.yaml"):
        load_policy(empty)
    listy = _write(tmp_path / "l", **{"00_x.yaml": "- just\n- a list\n"})
    with pytest.raises(PolicyError, match="top level must be a mapping"):
        load_policy(listy)


def test_the_bundled_matrix_loads_clean_and_an_owner_key_outside_contacts_is_a_located_error(tmp_path: Path) -> None:
    assert load_policy(BUNDLED_POLICY).warnings == []
    owners = OWNERS.replace("ann: {name: Ann, contacts: {slack: U1}}", "ann: {name: Ann, slack: U1}")
    folder = _write(tmp_path / "p", **{"00_owners.yaml": owners, "10_wf.yaml": WORKFLOW})
    with pytest.raises(PolicyError) as err:
        load_policy(folder)
    [issue] = err.value.issues
    assert (issue.file, issue.path) == (str(folder / "00-owners.yaml"), "owners.ann.slack")


def test_a_gate_is_named_auto_approver_or_auto_if_critical_and_nothing_else() -> None:
    binding = {"rules": ["unapproved_tool"], "playbook": "quarantine"}
    assert [PlaybookBinding.model_validate({**binding, "gate": g}).gate for g in ("auto", "approver",
            "auto_if_critical")] == [Gate.auto, Gate.approver, Gate.auto_if_critical]
    with pytest.raises(ValidationError, match="gate"):
        PlaybookBinding.model_validate({**binding, "gate": "none"})


def test_a_folder_reads_only_its_yaml_files_and_a_single_file_is_a_policy_of_its_own(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", **{"00_owners.yaml": OWNERS, "10_wf.yml": WORKFLOW, "README.md": "# not policy",
                                        "20_old.yaml.bak": "{broken"})
    (folder / "30-nested.yaml").mkdir()  # a folder named like a policy file is not read
    assert [Path(f).name for f in load_policy(folder).files] == ["00-owners.yaml", "10-wf.yml"]
    single = tmp_path / "all.yaml"
    single.write_text(OWNERS + WORKFLOW)
    policy = load_policy(single)
    assert policy.files == (str(single),) and policy.workflow_id_for("a1") == "w1"


def test_the_sha256_covers_file_names_and_where_one_file_ends(tmp_path: Path) -> None:
    """Renaming a file, or moving bytes from the end of one file to the start of the next, is another policy."""
    a = load_policy(_write(tmp_path / "a", **{"00_owners.yaml": OWNERS, "10_wf.yaml": WORKFLOW})).sha256
    renamed = load_policy(_write(tmp_path / "b", **{"00_owners.yaml": OWNERS, "11_wf.yaml": WORKFLOW})).sha256
    moved = load_policy(_write(tmp_path / "c", **{"00_owners.yaml": OWNERS + "\n", "10_wf.yaml": WORKFLOW[1:]}))
    assert len({a, renamed, moved.sha256}) == 3 and len(a) == 64
    again = load_policy(_write(tmp_path / "d", **{"00_owners.yaml": OWNERS, "10_wf.yaml": WORKFLOW})).sha256
    assert again == a


def test_an_empty_file_is_an_empty_document_and_a_missing_path_says_so(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", **{"00_owners.yaml": OWNERS, "10_wf.yaml": WORKFLOW, "20_empty.yaml": ""})
    assert len(load_policy(folder).files) == 3
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "nowhere")
    assert [str(i) for i in err.value.issues] == [f"{tmp_path / 'nowhere'}: policy file or folder does not exist"]


def test_invalid_yaml_names_its_line_and_column_counted_from_one(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", **{"00_x.yaml": "a: 1\nb: [unclosed\n"})
    with pytest.raises(PolicyError) as err:
        load_policy(folder)
    [issue] = err.value.issues
    assert (issue.line, issue.path) == (3, "") and issue.reason.startswith("invalid YAML: expected ',' or ']'")
    assert issue.reason.endswith("(column 1)") and str(issue).startswith(f"{issue.file}:3: invalid YAML")


def test_a_file_that_is_not_utf8_is_located_and_the_other_files_are_still_checked(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", **{"00_owners.yaml": OWNERS, "20_list.yaml": "- a list\n"})
    (folder / "10-latin1.yaml").write_bytes("owner: Jos\xe9".encode("latin-1"))
    with pytest.raises(PolicyError) as err:
        load_policy(folder)
    assert [(Path(i.file).name, i.reason) for i in err.value.issues] == [
        ("10-latin1.yaml", "not UTF-8 text"), ("20-list.yaml", "top level must be a mapping, not list")]


def test_a_file_that_cannot_be_read_is_located_with_the_systems_reason(tmp_path: Path) -> None:
    folder = _write(tmp_path / "p", **{"00_owners.yaml": OWNERS})
    (folder / "10-unreadable.yaml").symlink_to("/proc/self/mem")  # a file whose first byte no one may read (Linux)
    with pytest.raises(PolicyError) as err:
        load_policy(folder)
    assert [(Path(i.file).name, i.reason) for i in err.value.issues] == [
        ("10-unreadable.yaml", "cannot read: Input/output error")]
