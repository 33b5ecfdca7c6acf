"""Load the matrix from a file or folder, check it, and index it so lookups never scan."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from playbooks.catalog import PLAYBOOKS
from warden.cel_rules import CompiledRules, compile_rules
from warden.globs import CompiledScope
from warden.matrix import EscalationStep, Matrix, Owner, Workflow

POLICY_SUFFIXES = (".yaml", ".yml")
# Sections merged key by key across the files of a folder; a later file (in name order) wins a key.
_KEYED = (("owners",), ("workflows",), ("rules", "builtin"), ("defaults",))
# Sections whose lists concatenate across files, in name order.
_LISTED = (("rules", "custom"), ("playbooks",))


@dataclass(frozen=True)
class PolicyIssue:
    """One located problem: the file, the dotted path inside it and why."""

    file: str
    path: str
    reason: str
    level: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "file": self.file, "path": self.path, "reason": self.reason}


class PolicyError(Exception):
    """The policy cannot be used; `issues` says where and why."""

    def __init__(self, issues: list[PolicyIssue], warnings: list[PolicyIssue] | None = None):
        self.issues = issues
        self.warnings = warnings or []
        super().__init__("; ".join(str(i) for i in issues))


@dataclass(frozen=True)
class ResolvedOwners:
    """The owners of one workflow, frozen at the moment a finding is made."""

    approver: str | None
    detector: str | None
    responder: str
    business_owner: str | None
    data_owner: str | None
    escalation: tuple[EscalationStep, ...]


@dataclass(frozen=True)
class Assignment:
    """An agent's workflow and its compiled scope: what one lookup by agent id yields on the hot path."""

    workflow_id: str
    workflow: Workflow
    scope: CompiledScope


@dataclass
class Policy:
    """A validated matrix plus the indexes that keep detection cost independent of its size."""

    matrix: Matrix
    sha256: str
    files: tuple[str, ...]
    rules: CompiledRules | None = field(default=None, repr=False)
    warnings: list[PolicyIssue] = field(default_factory=list)
    assignments: dict[str, Assignment] = field(init=False, default_factory=dict, repr=False)
    _owners_cache: dict[str | None, ResolvedOwners] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        """Index once: agent -> workflow and compiled scope globs, and CEL rules (compiled here if not given)."""
        if self.rules is None:
            self.rules, problems = compile_rules(self.matrix.rules.custom)
            if problems:
                raise PolicyError([PolicyIssue(self.files[0] if self.files else "", ".".join(p), r)
                                   for p, r in problems])
        self.assignments = {}
        for wf_id, wf in self.matrix.workflows.items():
            assignment = Assignment(wf_id, wf, CompiledScope.of(wf.scope))
            for agent in wf.agents:
                self.assignments[agent] = assignment  # load_policy rejects an agent claimed twice

    def workflow_id_for(self, agent_id: str) -> str | None:
        assignment = self.assignments.get(agent_id)
        return assignment.workflow_id if assignment else None

    def workflow(self, workflow_id: str | None) -> Workflow | None:
        return self.matrix.workflows.get(workflow_id) if workflow_id else None

    def owner(self, owner_id: str | None) -> Owner | None:
        return self.matrix.owners.get(owner_id) if owner_id else None

    def owners_for(self, workflow_id: str | None) -> ResolvedOwners:
        """Named roles for a workflow; an unknown workflow routes to the default security owner."""
        cached = self._owners_cache.get(workflow_id)
        if cached is not None:
            return cached
        wf = self.workflow(workflow_id)
        d = self.matrix.defaults
        if wf is None:
            resolved = ResolvedOwners(
                approver=d.security_owner,
                detector=d.security_owner,
                responder=d.security_owner,
                business_owner=None,
                data_owner=None,
                escalation=tuple(d.escalation),
            )
        else:
            resolved = ResolvedOwners(
                approver=wf.approver,
                detector=wf.detector,
                responder=wf.responder or d.security_owner,
                business_owner=wf.business_owner,
                data_owner=wf.data_owner,
                escalation=tuple(wf.escalation or d.escalation),
            )
        self._owners_cache[workflow_id] = resolved
        return resolved


def policy_files(path: Path) -> list[Path]:
    """The YAML files that make up a policy: one file, or every YAML file in a folder, in name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
    return [path]


def load_policy(path: str | Path) -> Policy:
    """Read, merge, validate and index a policy. Raises PolicyError with located issues."""
    root = Path(path)
    if not root.exists():
        raise PolicyError([PolicyIssue(str(root), "", "policy file or folder does not exist")])
    files = policy_files(root)
    if not files:
        raise PolicyError([PolicyIssue(str(root), "", "folder holds no .yaml or .yml policy files")])
    digest = hashlib.sha256()
    documents: list[tuple[str, dict[str, Any]]] = []
    issues: list[PolicyIssue] = []
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as exc:
            issues.append(PolicyIssue(str(f), "", f"cannot read: {exc.strerror or exc}"))
            continue
        digest.update(f.name.encode() + b"\0" + raw + b"\0")
        try:
            doc = yaml.safe_load(raw.decode("utf-8")) or {}
        except UnicodeDecodeError:
            issues.append(PolicyIssue(str(f), "", "not UTF-8 text"))
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            issues.append(PolicyIssue(str(f), where, f"invalid YAML: {getattr(exc, 'problem', None) or exc}"))
            continue
        if not isinstance(doc, dict):
            issues.append(PolicyIssue(str(f), "", f"top level must be a mapping, not {type(doc).__name__}"))
            continue
        documents.append((str(f), doc))
    if issues:
        raise PolicyError(issues)
    merged, provenance = _merge(documents)
    try:
        matrix = Matrix.model_validate(merged)
    except ValidationError as exc:
        raise PolicyError([_locate(err, provenance, files) for err in exc.errors()]) from None
    errors, warnings = check_matrix(matrix, provenance, str(files[0]))
    rules, problems = compile_rules(matrix.rules.custom)
    errors += [PolicyIssue(file_for(p, provenance, str(files[0])), ".".join(p), reason) for p, reason in problems]
    if errors:
        raise PolicyError(errors, warnings)
    return Policy(matrix=matrix, sha256=digest.hexdigest(), files=tuple(str(f) for f in files), rules=rules,
                  warnings=warnings)


def _merge(documents: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Merge documents in name order and remember which file each entry came from."""
    merged: dict[str, Any] = {}
    provenance: dict[tuple[str, ...], str] = {}
    for fname, doc in documents:
        for key, value in doc.items():
            provenance.setdefault((key,), fname)
            if key == "rules" and isinstance(value, dict):
                if not isinstance(merged.get("rules"), dict):
                    merged["rules"] = {}
                for rule_key, rule_value in value.items():
                    _merge_entry(merged["rules"], ("rules", rule_key), rule_value, fname, provenance)
            else:
                _merge_entry(merged, (key,), value, fname, provenance)
    return merged, provenance


def _merge_entry(
    target: dict[str, Any], path: tuple[str, ...], value: Any, fname: str, provenance: dict[tuple[str, ...], str]
) -> None:
    """Keyed sections merge key by key (later file wins), list sections concatenate, the rest is replaced."""
    name = path[-1]
    current = target.get(name)
    if path in _KEYED and isinstance(value, dict) and isinstance(current, dict):
        current.update(value)
    elif path in _LISTED and isinstance(value, list) and isinstance(current, list):
        for i in range(len(value)):
            provenance[(*path, str(len(current) + i))] = fname
        current.extend(value)
        return
    else:
        target[name] = dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value
        current = target[name]
        if isinstance(value, list):
            for i in range(len(value)):
                provenance[(*path, str(i))] = fname
    provenance[path] = fname if not isinstance(value, dict) else provenance.get(path, fname)
    if isinstance(value, dict):
        for k in value:
            provenance[(*path, str(k))] = fname


def file_for(path: tuple[str, ...], provenance: dict[tuple[str, ...], str], fallback: str) -> str:
    """The file that defined the longest known prefix of `path`."""
    for n in range(len(path), 0, -1):
        f = provenance.get(tuple(path[:n]))
        if f:
            return f
    return fallback


def _locate(err: Any, provenance: dict[tuple[str, ...], str], files: list[Path]) -> PolicyIssue:
    loc = tuple(str(p) for p in err["loc"])
    return PolicyIssue(file_for(loc, provenance, str(files[0])), ".".join(loc), err["msg"])


ROLES = ("approver", "detector", "responder", "business_owner", "data_owner")
REQUIRED_ROLES = ("approver", "detector", "responder")


def check_matrix(
    matrix: Matrix, provenance: dict[tuple[str, ...], str], fallback: str
) -> tuple[list[PolicyIssue], list[PolicyIssue]]:
    """Cross-references the schema cannot see: named roles, defined owners, one workflow per agent."""
    errors: list[PolicyIssue] = []
    warnings: list[PolicyIssue] = []

    def issue(path: tuple[str, ...], reason: str, level: str = "error") -> None:
        target = errors if level == "error" else warnings
        target.append(PolicyIssue(file_for(path, provenance, fallback), ".".join(path), reason, level))

    used: set[str] = set()

    def ref(path: tuple[str, ...], owner_id: str) -> None:
        used.add(owner_id)
        if owner_id not in matrix.owners:
            issue(path, f"owner {owner_id!r} is referenced but not defined under owners")

    ref(("defaults", "security_owner"), matrix.defaults.security_owner)
    for i, step in enumerate(matrix.defaults.escalation):
        ref(("defaults", "escalation", str(i), "owner"), step.owner)
    claimed: dict[str, str] = {}
    for wf_id, wf in matrix.workflows.items():
        base = ("workflows", wf_id)
        for role in REQUIRED_ROLES:
            if not getattr(wf, role):
                issue((*base, role), f"workflow has no named {role}")
        for role in ROLES:
            owner_id = getattr(wf, role)
            if owner_id:
                ref((*base, role), owner_id)
        for i, step in enumerate(wf.escalation):
            ref((*base, "escalation", str(i), "owner"), step.owner)
        for i, agent in enumerate(wf.agents):
            other = claimed.setdefault(agent, wf_id)
            if other != wf_id:
                issue((*base, "agents", str(i)), f"agent {agent!r} is already claimed by workflow {other!r}")
        if not wf.agents:
            issue((*base, "agents"), "workflow lists no agents", "warning")
        if not wf.scope.tools and not wf.scope.data and not wf.scope.secrets:
            issue((*base, "scope"), "scope is empty: every tool, data and secret access is out of scope", "warning")
        gate = wf.scope.identity_changes  # a missing approver is reported above; other roles are checked here
        if gate.require_approval and not getattr(wf, gate.approval_from) and gate.approval_from not in REQUIRED_ROLES:
            issue((*base, "scope", "identity_changes", "approval_from"),
                  f"identity changes need approval from the {gate.approval_from}, and the workflow names none")
    for owner_id in matrix.owners:
        if owner_id not in used:
            issue(("owners", owner_id), "owner is defined but never named in a role", "warning")
    _check_rule_ids(matrix, issue)
    return errors, warnings


def _check_rule_ids(matrix: Matrix, issue: Callable[[tuple[str, ...], str], None]) -> None:
    """Rule ids and playbook names must exist: a typo would silently disable an override or a playbook."""
    from streams.detectors import REGISTRY  # the detector catalogue; imported late, it imports this module

    builtin = set(REGISTRY)
    for rule_id in matrix.rules.builtin:
        if rule_id not in builtin:
            known = ", ".join(sorted(builtin))
            issue(("rules", "builtin", rule_id), f"unknown built-in rule {rule_id!r} (known: {known})")
    custom: set[str] = set()
    for i, rule in enumerate(matrix.rules.custom):
        if rule.id in builtin or rule.id in custom:
            issue(("rules", "custom", str(i), "id"), f"rule id {rule.id!r} is already used")
        custom.add(rule.id)
    for i, binding in enumerate(matrix.playbooks):
        base = ("playbooks", str(i))
        if binding.playbook not in PLAYBOOKS:
            issue((*base, "playbook"), f"unknown playbook {binding.playbook!r} (known: {', '.join(sorted(PLAYBOOKS))})")
        for j, rule_id in enumerate(binding.rules):
            if rule_id not in builtin and rule_id not in custom:
                issue((*base, "rules", str(j)), f"unknown rule id {rule_id!r}")
