"""Load the matrix from a file or folder: read, merge, validate, check and index, with located errors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from warden.contract.matrix import CustomRule, Matrix
from warden.policy.cel import compile_rules
from warden.policy.lint import check_matrix
from warden.policy.merge import Lines, Locator, Provenance, merge, merge_lines
from warden.policy.model import Catalogue, Policy, PolicyError, PolicyIssue
from warden.policy.scope_checks import compile_scope_checks
from warden.policy.yaml_lines import ReadYaml, read_yaml

POLICY_SUFFIXES = (".yaml", ".yml")


def policy_files(path: Path) -> list[Path]:
    """The YAML files that make up a policy: one file, or every YAML file in a folder, in name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
    return [path]


def load_policy(path: str | Path, catalogue: Catalogue) -> Policy:
    """Read, merge, validate and index a policy. Raises PolicyError with located issues.

    A stage's errors do not hide a later stage's where it does not depend on them: a key written twice is reported
    with the schema and cross-reference errors, and a schema error elsewhere does not hide a custom rule's."""
    root = Path(path)
    if not root.exists():
        raise PolicyError([PolicyIssue(str(root), "", "policy file or folder does not exist")])
    files = policy_files(root)
    if not files:
        raise PolicyError([PolicyIssue(str(root), "", "folder holds no .yaml or .yml policy files")])
    digest = hashlib.sha256()
    documents: list[tuple[str, dict[str, Any], dict[tuple[str, ...], int]]] = []
    unreadable: list[PolicyIssue] = []
    duplicates: list[PolicyIssue] = []
    for f in files:
        read = _read(f, digest)
        if isinstance(read, PolicyIssue):
            unreadable.append(read)
            continue
        doc, found = read
        duplicates += [PolicyIssue(str(f), ".".join(p), f"key {p[-1]!r} is written twice (first at line {first}): "
                                   "YAML would keep only the last one", line=line)
                       for p, line, first in found.duplicates]
        documents.append((str(f), doc, found.lines))
    if unreadable:  # the other files alone would report what the unreadable one defines as missing
        raise PolicyError(unreadable + duplicates)
    merged, provenance = merge([(f, doc) for f, doc, _ in documents])
    lines = merge_lines(documents)
    try:
        matrix = Matrix.model_validate(merged)
    except ValidationError as exc:
        locator = Locator(provenance, lines, str(files[0]))
        invalid = [locator.issue(tuple(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
        raise PolicyError(duplicates + invalid + _rule_issues(merged, locator)) from None
    try:
        policy = build_policy(matrix, catalogue, sha256=digest.hexdigest(), files=tuple(str(f) for f in files),
                              provenance=provenance, lines=lines)
    except PolicyError as exc:
        raise PolicyError(duplicates + exc.issues, exc.warnings) from None
    if duplicates:
        raise PolicyError(duplicates, policy.warnings)
    return policy


def _read(f: Path, digest: Any) -> tuple[dict[str, Any], ReadYaml] | PolicyIssue:
    """One file's top-level mapping and its lines (its bytes added to `digest`), or why it cannot be read."""
    try:
        raw = f.read_bytes()
    except OSError as exc:
        return PolicyIssue(str(f), "", f"cannot read: {exc.strerror or exc}")
    digest.update(f.name.encode() + b"\0" + raw + b"\0")
    try:
        read = read_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return PolicyIssue(str(f), "", "not UTF-8 text")
    except RecursionError:
        return PolicyIssue(str(f), "", "nested too deep to read")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return PolicyIssue(str(f), "", f"invalid YAML: {getattr(exc, 'problem', None) or exc}"
                           + (f" (column {mark.column + 1})" if mark else ""), line=mark.line + 1 if mark else None)
    doc = read.document or {}
    if not isinstance(doc, dict):
        return PolicyIssue(str(f), "", f"top level must be a mapping, not {type(doc).__name__}")
    return doc, read


def build_policy(matrix: Matrix, catalogue: Catalogue, *, sha256: str, files: tuple[str, ...] = (),
                 provenance: Provenance | None = None, lines: Lines | None = None) -> Policy:
    """The one way to make a Policy: check the cross-references, compile the CEL rules, index. Raises PolicyError."""
    locator = Locator(provenance or {}, lines or {}, files[0] if files else "<matrix>")
    errors, warnings = check_matrix(matrix, catalogue, locator)
    rules, problems = compile_rules(matrix.rules.custom, matrix.workflows)
    scope_checks, schema_problems = compile_scope_checks(matrix)
    problems += schema_problems
    errors += [locator.issue(p, reason) for p, reason in problems]
    if errors:
        raise PolicyError(errors, warnings)
    return Policy(matrix=matrix, sha256=sha256, files=files, rules=rules, warnings=warnings,
                  shipped_playbooks=catalogue.playbooks, scope_checks=scope_checks)


def _rule_issues(merged: dict[str, Any], locator: Locator) -> list[PolicyIssue]:
    """The CEL issues of the custom rules that are valid on their own, when the matrix as a whole is not: a schema
    error in a workflow must not hide a rule that can never fire."""
    section = merged.get("rules")
    entries = section.get("custom") if isinstance(section, dict) else None
    if not isinstance(entries, list):
        return []
    found: list[PolicyIssue] = []
    for i, entry in enumerate(entries):
        try:
            rule = CustomRule.model_validate(entry)
        except ValidationError:
            continue  # the matrix's own validation reports it
        _, problems = compile_rules([rule])
        found += [locator.issue(("rules", "custom", str(i), *p[3:]), reason) for p, reason in problems]
    return found
