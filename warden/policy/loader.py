"""Load the matrix from a file or folder: read, merge, validate, check and index, with located errors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from warden.contract.matrix import Matrix
from warden.policy.cel import compile_rules
from warden.policy.lint import check_matrix
from warden.policy.merge import Provenance, file_for, merge
from warden.policy.model import Catalogue, Policy, PolicyError, PolicyIssue
from warden.policy.scope_checks import compile_scope_checks

POLICY_SUFFIXES = (".yaml", ".yml")


def policy_files(path: Path) -> list[Path]:
    """The YAML files that make up a policy: one file, or every YAML file in a folder, in name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
    return [path]


def load_policy(path: str | Path, catalogue: Catalogue) -> Policy:
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
    merged, provenance = merge(documents)
    try:
        matrix = Matrix.model_validate(merged)
    except ValidationError as exc:
        raise PolicyError([_locate(err, provenance, files) for err in exc.errors()]) from None
    return build_policy(matrix, catalogue, sha256=digest.hexdigest(), files=tuple(str(f) for f in files),
                        provenance=provenance)


def build_policy(matrix: Matrix, catalogue: Catalogue, *, sha256: str, files: tuple[str, ...] = (),
                 provenance: Provenance | None = None) -> Policy:
    """The one way to make a Policy: check the cross-references, compile the CEL rules, index. Raises PolicyError."""
    fallback = files[0] if files else "<matrix>"
    provenance = provenance or {}
    errors, warnings = check_matrix(matrix, catalogue, provenance, fallback)
    rules, problems = compile_rules(matrix.rules.custom, matrix.workflows)
    scope_checks, schema_problems = compile_scope_checks(matrix)
    problems += schema_problems
    errors += [PolicyIssue(file_for(p, provenance, fallback), ".".join(p), reason) for p, reason in problems]
    if errors:
        raise PolicyError(errors, warnings)
    return Policy(matrix=matrix, sha256=sha256, files=files, rules=rules, warnings=warnings,
                  shipped_playbooks=catalogue.playbooks, scope_checks=scope_checks)


def _locate(err: Any, provenance: Provenance, files: list[Path]) -> PolicyIssue:
    loc = tuple(str(p) for p in err["loc"])
    return PolicyIssue(file_for(loc, provenance, str(files[0])), ".".join(loc), err["msg"])
