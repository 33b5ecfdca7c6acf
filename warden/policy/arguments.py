"""Argument constraints: JSON Schema per tool, plus named-list and domain keywords, compiled once per policy.

A constraint is standard JSON Schema (draft 2020-12 unless it says otherwise) with three Warden keywords that
JSON Schema cannot say well, each naming a list of the matrix (`lists:`, extended by the workflow's `lists:`):

- `in_list: NAME`: the value is one of the list's strings;
- `email_domain_in: NAME`: the value is one plain email address whose domain is in the list;
- `url_host_in: NAME`: the value is one absolute http(s) URL whose host is in the list.

They are rewritten into plain JSON Schema (`enum`, and a `format` whose check is a strict parser from
`warden.policy.addresses`) before jsonschema-rs compiles the schema, so validating an event costs one Rust call
when the arguments are fine. `bench/argument_validators.py` measured it against fastjsonschema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs

from warden.policy.addresses import DomainSet, domain_check, email_domain, url_host

KEYWORDS = ("in_list", "email_domain_in", "url_host_in")
_PARSERS: dict[str, Callable[[str], str | None]] = {"email_domain_in": email_domain, "url_host_in": url_host}
# Keywords whose value maps names (properties, definitions) to subschemas: their keys are not keywords.
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_LITERAL = frozenset({"enum", "const", "default", "examples", "required", "dependentRequired"})

SchemaIssue = tuple[tuple[str, ...], str]


@dataclass(frozen=True)
class Violation:
    """One broken constraint: where in the arguments, the offending value, and the constraint as written."""

    path: str
    value: Any
    constraint: str


@dataclass
class ArgumentCheck:
    """One tool's compiled constraint."""

    validator: Any  # a jsonschema_rs validator (the package ships no type stubs)
    schema: Mapping[str, Any] = field(repr=False)  # as expanded: constraints are quoted from it, never the value
    _written: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False)

    def ok(self, arguments: Mapping[str, Any] | None) -> bool:
        return bool(self.validator.is_valid(arguments or {})) and _first_non_finite(arguments, ()) is None

    def violations(self, arguments: Mapping[str, Any] | None) -> list[Violation]:
        """Every broken constraint, in the validator's (deterministic) order; [] when the arguments are fine."""
        out: list[Violation] = []
        odd = _first_non_finite(arguments, ())
        if odd is not None:
            out.append(Violation(".".join(odd[0]) or "(arguments)", odd[1], NON_FINITE))
        for err in self.validator.iter_errors(arguments or {}):
            path = ".".join(str(p) for p in err.instance_path) or "(arguments)"
            out.append(Violation(path, err.instance, self._describe(tuple(str(p) for p in err.schema_path))))
        return out

    def _describe(self, schema_path: tuple[str, ...]) -> str:
        """The constraint as the author wrote it (`in_list: payees`, `maximum: 500`), never the offending value:
        validator messages quote the value, and it may be secret."""
        for n in range(len(schema_path), 0, -1):
            written = self._written.get(schema_path[:n])
            if written is not None:
                return written
        node: Any = self.schema
        for part in schema_path:
            node = node[int(part)] if isinstance(node, list) else node.get(part) if isinstance(node, dict) else None
        keyword = schema_path[-1] if schema_path else "schema"
        shown = json.dumps(self._folded(node, schema_path), sort_keys=True, default=str)
        return f"{keyword}: {shown if len(shown) <= 120 else shown[:120] + '…'}"


    def _folded(self, node: Any, path: tuple[str, ...]) -> Any:
        """`node` of the expanded schema with each named-list keyword folded back as written (`{"in_list":
        "contacts"}`), so a constraint quotes the list's name, never its entries."""
        if isinstance(node, list):
            return [self._folded(v, (*path, str(i))) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "allOf" and isinstance(value, list):
                kept = []
                for i, sub in enumerate(value):
                    written = self._written.get((*path, "allOf", str(i)))
                    if written is None:
                        kept.append(self._folded(sub, (*path, "allOf", str(i))))
                    else:
                        name, _, listed = written.partition(": ")
                        out[name] = listed
                if kept:
                    out["allOf"] = kept
            else:
                out[key] = self._folded(value, (*path, key))
        return out


NON_FINITE = "finite numbers only (Infinity and NaN pass every numeric bound of the validator)"


def _first_non_finite(value: Any, path: tuple[str, ...]) -> tuple[tuple[str, ...], float] | None:
    """The first Infinity or NaN in the arguments, with its path. JSON parsing in the ingest accepts `1e999`,
    `Infinity` and `NaN`, and jsonschema-rs lets them through `maximum`: an amount of 1e999 must not pass."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _first_non_finite(item, (*path, str(key)))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_non_finite(item, (*path, str(i)))
            if found is not None:
                return found
    return None


@dataclass
class _Expansion:
    lists: Mapping[str, list[str]]
    formats: dict[str, Callable[[object], bool]] = field(default_factory=dict)
    written: dict[tuple[str, ...], str] = field(default_factory=dict)
    issues: list[SchemaIssue] = field(default_factory=list)


def compile_constraint(schema: Mapping[str, Any], lists: Mapping[str, list[str]],
                       where: tuple[str, ...]) -> tuple[ArgumentCheck | None, list[SchemaIssue]]:
    """Expand the Warden keywords and compile. `where` locates issues (e.g. workflows.w.scope.arguments.tool)."""
    ex = _Expansion(lists)
    expanded = _expand(schema, (), where, ex)
    if ex.issues:
        return None, ex.issues
    try:
        validator = jsonschema_rs.validator_for(expanded, formats=ex.formats, validate_formats=True)
    except (jsonschema_rs.ValidationError, ValueError, TypeError) as exc:
        first = " ".join(str(exc).split("Failed validating")[0].split())
        loc = getattr(exc, "instance_path", None)
        return None, [((*where, *(str(p) for p in loc or ())), f"invalid JSON Schema: {first}")]
    return ArgumentCheck(validator, expanded, ex.written), []


def _expand(node: Any, path: tuple[str, ...], where: tuple[str, ...], ex: _Expansion) -> Any:
    """A copy of `node` with the Warden keywords rewritten; `path` is the node's place in the expanded schema."""
    if isinstance(node, list):
        return [_expand(v, (*path, str(i)), (*where, str(i)), ex) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    extra: list[tuple[str, Any]] = []
    for key, value in node.items():
        if key in KEYWORDS:
            extra.append((key, value))
        elif key in _NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {k: _expand(v, (*path, key, k), (*where, key, k), ex) for k, v in value.items()}
        elif key in _LITERAL:
            out[key] = value
        else:
            out[key] = _expand(value, (*path, key), (*where, key), ex)
    if not extra:
        return out
    all_of = list(out.get("allOf", [])) if isinstance(out.get("allOf"), list) else []
    for key, name in extra:
        sub = _keyword(key, name, (*where, key), ex)
        if sub is None:
            continue
        ex.written[(*path, "allOf", str(len(all_of)))] = f"{key}: {name}"
        all_of.append(sub)
    out["allOf"] = all_of
    return out


def _keyword(key: str, name: Any, where: tuple[str, ...], ex: _Expansion) -> dict[str, Any] | None:
    if not isinstance(name, str) or name not in ex.lists:
        known = ", ".join(sorted(ex.lists)) or "none defined"
        ex.issues.append((where, f"unknown list {name!r} (lists: {known})"))
        return None
    values = ex.lists[name]
    if key == "in_list":
        return {"enum": list(values)}
    try:
        domains = DomainSet(values)
    except ValueError as exc:
        ex.issues.append((("lists", name), str(exc)))
        return None
    fmt = f"{key}:{name}"
    ex.formats[fmt] = domain_check(_PARSERS[key], domains)
    return {"type": "string", "format": fmt}


def merged_lists(top: Mapping[str, list[str]], own: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The lists a workflow sees: the matrix's, each extended by the workflow's list of the same name."""
    merged = {name: list(values) for name, values in top.items()}
    for name, values in own.items():
        merged[name] = merged.get(name, []) + [v for v in values if v not in merged.get(name, [])]
    return merged
