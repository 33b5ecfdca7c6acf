"""Custom CEL rules, compiled once per policy and indexed by event kind and tool so most events skip CEL."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from string import Template
from typing import Any

import cel

from warden.contract.events import Kind
from warden.contract.matrix import ROLES, CustomRule, Workflow
from warden.policy.cel_samples import never_evaluates

VARIABLES = ("event", "workflow")
# The finding raised when a custom rule cannot be evaluated on an event (streams/detectors/custom.py).
RULE_ERROR = "rule_error"
# Names the CEL checker reports as variables though they are not: type names (`type(x) == list`)...
TYPE_NAMES = frozenset({"bool", "bytes", "double", "duration", "int", "list", "map", "null_type", "string",
                        "timestamp", "type", "uint"})
# ... and the variables that comprehension macros bind: `xs.all(x, ...)`, `m.exists_one(k, ...)`.
_MACRO_BINDING = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
# Functions the runtime evaluates (checked against it by tests/unit/warden/test_cel_validator.py); operators
# (`_+_`, `@in`,
# `!_`) are always there. Any other name fails at run time, so the lint rejects it.
FUNCTIONS = frozenset({
    "size", "int", "uint", "double", "string", "bytes", "type", "dyn", "duration", "timestamp",
    "matches", "contains", "startsWith", "endsWith",
    "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    "of", "none", "ofNonZeroValue", "hasValue", "value", "orValue", "or",  # optional values: optional.of(x)...
})
# Namespaces the checker reports as variables: `optional.of(1)` reads no variable called optional.
NAMESPACES = frozenset({"optional"})
WORKFLOW_FIELDS = ("risk", "mode", *ROLES)
KINDS = frozenset(k.value for k in Kind)
# A string literal without escapes or prefixes; anything fancier is simply not used as an index hint.
_LIT = r"""(?:"[^"\\']*"|'[^'\\"]*')"""
_PAIRS = {"(": ")", "[": "]", "{": "}"}

RuleIssue = tuple[tuple[str, ...], str]


class OutputTemplate(Template):
    """`${event.tool.name}` / `${workflow.id}` placeholders; unknown ones are left as written."""

    idpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)*)"


class _Dotted(dict[str, Any]):
    """Resolves a dotted placeholder against the CEL variables."""

    def __init__(self, variables: dict[str, Any]) -> None:
        super().__init__()
        self._variables = variables

    def __getitem__(self, key: str) -> Any:
        value: Any = self._variables
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(key)
            value = value[part]
        return value


@dataclass(frozen=True)
class CompiledRule:
    """One custom rule with its programs compiled, and the kinds and tools its condition pins (None: any)."""

    index: int
    rule: CustomRule
    condition: cel.Program
    exceptions: tuple[cel.Program, ...]
    output: OutputTemplate
    kinds: frozenset[str] | None
    tools: frozenset[str] | None
    uses_workflow: bool

    def matches(self, context: cel.Context) -> bool:
        """True when the condition holds and no exception does. An evaluation error is raised to the caller."""
        if self.condition.execute(context) is not True:
            return False
        return not any(exc.execute(context) is True for exc in self.exceptions)

    def render(self, variables: dict[str, Any]) -> str:
        return self.output.safe_substitute(_Dotted(variables))


@dataclass
class CompiledRules:
    """Every compiled custom rule, indexed so that finding the candidates for an event is two dict lookups."""

    rules: tuple[CompiledRule, ...] = ()
    _by_kind: dict[str, tuple[CompiledRule, ...]] = field(init=False, default_factory=dict, repr=False)
    _by_kind_tool: dict[tuple[str, str], tuple[CompiledRule, ...]] = field(init=False, default_factory=dict, repr=False)
    _workflow_vars: dict[str | None, dict[str, Any] | None] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for kind in KINDS:
            self._by_kind[kind] = tuple(
                r for r in self.rules if r.tools is None and (r.kinds is None or kind in r.kinds)
            )
        pinned: dict[tuple[str, str], list[CompiledRule]] = {}
        for r in self.rules:
            if r.tools is not None:
                for kind in r.kinds if r.kinds is not None else KINDS:
                    for tool in r.tools:
                        pinned.setdefault((kind, tool), []).append(r)
        self._by_kind_tool = {k: tuple(v) for k, v in pinned.items()}

    def candidates(self, kind: str, tool: str | None) -> tuple[CompiledRule, ...]:
        """The rules that can match an event of this kind (and tool), in declaration order."""
        general = self._by_kind.get(kind, ())
        pinned = self._by_kind_tool.get((kind, tool)) if tool is not None else None
        if not pinned:
            return general
        return tuple(sorted(general + pinned, key=lambda r: r.index))

    def workflow_vars(self, workflow_id: str | None, workflow: Workflow | None) -> dict[str, Any] | None:
        """The `workflow` CEL variable (null for an unowned agent), built once per workflow per policy.

        Only flat facts are exposed (id, risk, mode, the named roles, max_classification): every extra field
        makes each CEL context dearer to build.
        """
        if workflow_id not in self._workflow_vars:
            self._workflow_vars[workflow_id] = workflow_vars_of(workflow_id, workflow)
        return self._workflow_vars[workflow_id]


def workflow_vars_of(workflow_id: str | None, workflow: Workflow | None) -> dict[str, Any] | None:
    """The `workflow` CEL variable of one workflow (None for an unowned agent)."""
    if workflow is None:
        return None
    return {"id": workflow_id, "max_classification": workflow.scope.max_classification,
            **workflow.model_dump(mode="json", include=set(WORKFLOW_FIELDS))}


# The `workflow` a rule is tried with when the matrix has none: the lint must not blame a rule for an empty matrix.
_SAMPLE_WORKFLOW = workflow_vars_of("sample", Workflow(approver="sample", detector="sample", responder="sample",
                                                       business_owner="sample", data_owner="sample"))


def compile_rules(rules: list[CustomRule], workflows: Mapping[str, Workflow] | None = None
                  ) -> tuple[CompiledRules, list[RuleIssue]]:
    """Compile every condition and exception once, and try each on typed sample events (`cel_samples`); return the
    usable rules and located issues. `workflows` are the matrix's, the values the `workflow` variable can take."""
    compiled: list[CompiledRule] = []
    issues: list[RuleIssue] = []
    choices = [None, _SAMPLE_WORKFLOW, *_distinct(workflow_vars_of(w, wf) for w, wf in (workflows or {}).items())]
    for i, rule in enumerate(rules):
        base = ("rules", "custom", str(i))
        condition = _compile(rule.condition, (*base, "condition"), issues)
        exceptions = [_compile(src, (*base, "exceptions", str(j)), issues) for j, src in enumerate(rule.exceptions)]
        usable = [e for e in exceptions if e is not None]
        output = OutputTemplate(rule.output)
        for name in output.get_identifiers():
            if name.split(".")[0] not in VARIABLES:
                issues.append(((*base, "output"), f"placeholder ${{{name}}} must start with event. or workflow."))
        if not output.is_valid():
            issues.append(((*base, "output"), "invalid placeholder; write ${event.field} (and $$ for a dollar)"))
        kinds, tools = index_hints(rule.condition)
        unknown = sorted(kinds - KINDS) if kinds is not None else []
        if unknown:
            issues.append(((*base, "condition"), f"condition can never match: {unknown} is not an event kind"))
        programs = [((*base, "condition"), rule.condition, condition),
                    *(((*base, "exceptions", str(j)), src, exceptions[j]) for j, src in enumerate(rule.exceptions))]
        if not unknown and _sample_issues(programs, kinds, tools, choices, issues):
            continue  # it can never fire: reported, not compiled
        if condition is not None and len(usable) == len(exceptions):
            uses_workflow = any("workflow" in p.variables() for p in (condition, *usable))
            compiled.append(CompiledRule(i, rule, condition, tuple(usable), output, kinds, tools, uses_workflow))
    return CompiledRules(tuple(compiled)), issues


def _sample_issues(programs: list[tuple[tuple[str, ...], str, cel.Program | None]], kinds: frozenset[str] | None,
                   tools: frozenset[str] | None, choices: list[dict[str, Any] | None], issues: list[RuleIssue]) -> bool:
    """Report each program that raises on every sample event (`cel_samples`); True when any does."""
    found = False
    for path, source, program in programs:
        error = None if program is None else never_evaluates(program, code_only(source), kinds, tools, choices)
        if error is not None:
            found = True
            issues.append((path, f"raises on every sample event it can match ({_kinds_shown(kinds)}), so it can "
                           f"never fire: {error}"))
    return found


def _distinct(variables: Iterable[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
    """One `workflow` value per distinct shape (risk, mode, roles): a thousand workflows are a handful of samples."""
    seen: dict[str, dict[str, Any] | None] = {}
    for v in variables:
        key = repr(sorted((k, x) for k, x in (v or {}).items() if k != "id"))
        seen.setdefault(key, v)
    return list(seen.values())


def _kinds_shown(kinds: frozenset[str] | None) -> str:
    return "every kind" if kinds is None else ", ".join(sorted(kinds))


def _compile(source: str, path: tuple[str, ...], issues: list[RuleIssue]) -> cel.Program | None:
    try:
        program = cel.compile(source)
    except ValueError as exc:
        issues.append((path, f"CEL does not compile: {' '.join(str(exc).split())}"))
        return None
    refs = program.references()
    bound = set(_MACRO_BINDING.findall(code_only(source)))
    unknown = sorted(set(refs["variables"]) - set(VARIABLES) - TYPE_NAMES - NAMESPACES - bound)
    if unknown:
        issues.append((path, f"unknown variable(s) {unknown}: rules see only `event` and `workflow`"))
        return None
    functions = sorted(f for f in refs["functions"] if f[:1].isalpha() and f not in FUNCTIONS)
    if functions:
        issues.append((path, f"unknown function(s) {functions}: CEL here has {', '.join(sorted(FUNCTIONS))}"))
        return None
    return program


def strip_comments(source: str) -> str:
    """`source` without its `//` comments (to the end of the line); a `//` inside a string literal is text.

    The index hint and the macro-binding scan read the source as text: a commented-out conjunct must not pin what
    the rule runs on, and an apostrophe in a comment must not open a string."""
    return _scan(source, keep_strings=True)


def code_only(source: str) -> str:
    """`source` without comments and with every string literal blanked, so a macro-looking string binds nothing."""
    return _scan(source, keep_strings=False)


def _scan(source: str, *, keep_strings: bool) -> str:
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        if source[i] in "\"'":
            j = _skip_string(source, i)
            out.append(source[i:j] if keep_strings else '""')
            i = j
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        else:
            out.append(source[i])
            i += 1
    return "".join(out)


def index_hints(source: str) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """The event kinds and tool names a condition requires, read from its top-level `&&` conjuncts.

    Only a conjunct of the form `event.kind == "x"` or `event.kind in ["x", "y"]` (likewise `event.tool.name`)
    pins a value. A top-level `||` or `?:` means nothing is pinned. None means "any".
    """
    conjuncts = _top_level_conjuncts(strip_comments(source))
    kinds: frozenset[str] | None = None
    tools: frozenset[str] | None = None
    for c in conjuncts:
        k = _pinned(c, "event.kind")
        if k is not None:
            kinds = k if kinds is None else kinds & k
        t = _pinned(c, "event.tool.name")
        if t is not None:
            tools = t if tools is None else tools & t
    return kinds, tools


def _pinned(conjunct: str, name: str) -> frozenset[str] | None:
    f = re.escape(name)
    for pattern in (
        rf"{f}\s*==\s*({_LIT})",
        rf"({_LIT})\s*==\s*{f}",
        rf"{f}\s+in\s+\[\s*({_LIT}(?:\s*,\s*{_LIT})*)\s*,?\s*\]",
    ):
        m = re.fullmatch(pattern, conjunct)
        if m:
            return frozenset(s[1:-1] for s in re.findall(_LIT, m.group(1)))
    return None


def _top_level_conjuncts(source: str) -> list[str]:
    """Split at `&&` outside brackets and string literals; [] when a top-level `||` or `?` is present."""
    parts: list[str] = []
    depth, start, i, n = 0, 0, 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "\"'":
            i = _skip_string(source, i)
            continue
        if ch in _PAIRS:
            depth += 1
        elif ch in _PAIRS.values():
            depth -= 1
        elif depth == 0 and (source.startswith("||", i) or ch == "?"):
            return []
        elif depth == 0 and source.startswith("&&", i):
            parts.append(source[start:i].strip())
            start = i + 2
            i += 1
        i += 1
    parts.append(source[start:].strip())
    return parts


def _skip_string(source: str, i: int) -> int:
    """Index just past the CEL string literal opening at `i` (raw and triple-quoted forms included)."""
    raw = i > 0 and source[i - 1] in "rR"
    quote = source[i] * 3 if source.startswith(source[i] * 3, i) else source[i]
    j = i + len(quote)
    while j < len(source):
        if not raw and source[j] == "\\":
            j += 2
            continue
        if source.startswith(quote, j):
            return j + len(quote)
        j += 1
    return j
