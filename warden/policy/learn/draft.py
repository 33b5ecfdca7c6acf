"""Assemble the draft matrix from observed activity: per workflow the tools, their generalised argument constraints,
data and secret globs and identity operations, each with a comment naming its evidence, and the rules those entries
feed in shadow mode, so nothing drafted alerts anyone until a person flips it (docs/learn.md)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel

from warden.contract.matrix import CLASSIFICATIONS, SENSITIVE_AFTER_UNTRUSTED, Category, Workflow
from warden.contract.redact import redact_text
from warden.policy.addresses import DomainSet, normalise_domain
from warden.policy.learn import generalise
from warden.policy.learn.emit import Noted, emit, plain
from warden.policy.learn.observe import MAX_IDS, Learner, Resources, WorkflowActivity
from warden.policy.learn.stats import ValueStats

# The built-in rules whose findings the drafted entries decide: in shadow mode in every draft.
SHADOWED = ("unapproved_tool", "argument_out_of_scope", "data_out_of_scope", "secret_access",
            "unreviewed_identity_change")
BASE_OWNER = "security"
_GLOB_CHARS = re.compile(r"([*?\[])")
_LIST_CHARS = re.compile(r"[^a-z0-9]+")
_SENSITIVE = frozenset(SENSITIVE_AFTER_UNTRUSTED)


@dataclass
class Draft:
    """The learned file (commented text and its plain content), and the base document when there was no current
    matrix to start from."""

    learned: dict[str, Any]
    text: str
    base: dict[str, Any] | None = None
    base_text: str | None = None
    drafted: list[str] = field(default_factory=list)
    stubs: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)  # workflows of the current matrix with no activity


def draft(learner: Learner, header: Iterable[str] = ()) -> Draft:
    """The draft for everything `learner` observed. Deterministic: the same observations give the same text."""
    current = learner.current
    security = current.matrix.defaults.security_owner if current is not None else BASE_OWNER
    workflows: dict[str, Any] = {}
    result = Draft({}, "")
    for wf_id in sorted(learner.workflows):
        activity = learner.workflows[wf_id]
        existing = current.workflow(wf_id) if current is not None else None
        workflows[wf_id] = _workflow(activity, existing, learner, security)
        (result.drafted if existing is not None else result.stubs).append(wf_id)
    if current is not None:
        result.untouched = sorted(set(current.matrix.workflows) - set(learner.workflows))
    builtin = current.matrix.rules.builtin if current is not None else {}
    rules = {r: {**(_dump(builtin[r]) if r in builtin else {}), "mode": "shadow"} for r in SHADOWED}
    document: dict[str, Any] = {
        "rules": Noted({"builtin": rules}, (
            "Every entry drafted below is decided by these rules, in shadow mode: recorded, never routed. Flip one",
            "to `mode: enforce` once `warden replay --against` shows what it would change (docs/learn.md).")),
        "workflows": workflows,
    }
    notes = [*header, f"{learner.events} valid events read; workflows drafted: {len(result.drafted)}, stubs for "
             f"unknown agents: {len(result.stubs)}"]
    if result.untouched:
        notes.append("not drafted (no activity seen), kept as they are: " + ", ".join(result.untouched))
    if learner.unowned_dropped:
        notes.append(f"{learner.unowned_dropped} events of unknown agents past the stub cap were not drafted")
    result.learned, result.text = plain(document), emit(document, tuple(notes))
    if current is None:
        base = {"version": 1, "defaults": {"security_owner": BASE_OWNER},
                "owners": {BASE_OWNER: {"name": "Security (name your team and its contacts)", "kind": "team"}}}
        result.base, result.base_text = base, emit(base, (
            "No current matrix was given: the stub workflows route to this owner until you name real ones.",))
    return result


def _workflow(activity: WorkflowActivity, existing: Workflow | None, learner: Learner, security: str) -> Noted:
    """One workflow: the current entry's roles and settings, with the scope drafted from its activity."""
    current = learner.current
    if existing is not None:
        doc = _dump(existing, exclude={"scope", "lists"})
        lists = dict(existing.lists)
    else:
        doc = {"description": "Drafted by `warden policy learn` for an agent no workflow lists.",
               "agents": [activity.stub_agent], "approver": security, "detector": security, "responder": security}
        lists = {}
    taken = set(lists) | (set(current.matrix.lists) if current is not None else set())
    known = _domains([*(current.matrix.lists.values() if current is not None else []), *lists.values()])
    tools, arguments, unless = _tools(activity, learner, taken, known, lists)
    scope: dict[str, Any] = {"tools": tools}
    if arguments:
        scope["arguments"] = arguments
    old = existing.scope if existing is not None else None
    data = _globs(activity.data, "data")
    if data:
        scope["data"] = data
    if activity.classification >= 0:
        scope["max_classification"] = Noted(CLASSIFICATIONS[activity.classification],
                                            ("the highest classification of the data read",))
    elif old is not None:
        scope["max_classification"] = old.max_classification
    secrets = _globs(activity.secrets, "secret")
    if secrets:
        scope["secrets"] = secrets
    scope["identity_changes"] = _identity(activity, old, learner)
    drafted_tools = [plain(t) for t in tools]
    if old is not None:
        scope.update(_dump(old, include={"limits", "approvals"}))
        flows = [_dump(f) for f in old.flows]
        for flow in flows:
            flow["unless"] = {t: s for t, s in flow.get("unless", {}).items() if _allowed(t, drafted_tools)}
        if flows:
            scope["flows"] = flows
    flow_settings = _dump(old.untrusted_flow, exclude={"unless"}) if old is not None else {}
    kept = {t: s for t, s in (old.untrusted_flow.unless.items() if old is not None else ())
            if _allowed(t, drafted_tools) and t not in unless}
    if unless or kept:
        flow_settings["unless"] = Noted({**kept, **unless}, (
            "a sensitive call after untrusted input is fine when it meets what such calls did (a known payee after",
            "reading a bill); a drafted tool never called so keeps the current matrix's exemption, if any"))
    if flow_settings:
        scope["untrusted_flow"] = flow_settings
    doc["scope"] = scope
    if lists:
        doc["lists"] = {k: lists[k] for k in sorted(lists)}
    return Noted(doc, (f"{activity.workflow_id}: {activity.evidence.describe()}",))


def _tools(activity: WorkflowActivity, learner: Learner, taken: set[str], known: DomainSet, lists: dict[str, list[str]]
           ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The tools list, the argument constraints and the `untrusted_flow` exemptions of sensitive tools (from their
    calls after untrusted input); the named lists they use are added to `lists`."""
    catalogue = learner.current.tools if learner.current is not None else None
    tools: list[Any] = []
    arguments: dict[str, Any] = {}
    unless: dict[str, Any] = {}
    for name in sorted(activity.tools):
        use = activity.tools[name]
        entry = catalogue.entry(name) if catalogue is not None else None
        categories = sorted(c.value for c in entry.categories) if entry is not None else []
        comment = [f"{name}: {use.evidence.describe()}; catalogue: "
                   + (", ".join(categories) or "no category" if entry is not None else "not in the catalogue")]
        if _GLOB_CHARS.search(name):
            tools.append(Noted(_GLOB_CHARS.sub(r"[\1]", name), (*comment, "its name holds glob characters: "
                                                                "escaped, and no argument constraint")))
            continue
        resource = entry.spec.resource if entry is not None else None
        code = resource is not None and entry is not None and Category.code_exec in entry.categories
        commands = frozenset({resource}) if code and resource else frozenset()
        sensitive = entry is not None and bool(_SENSITIVE & entry.categories)
        recipients = frozenset({resource}) if sensitive and resource and not code else frozenset()
        ctx = generalise.Context(_namer(name, taken), known, commands, recipients)
        found = generalise.arguments(use.arguments, ctx, resource)
        notes = [f"  {path}: {note}" for path, note in found.notes]
        if found.schema is None:
            tools.append(Noted(name, (*comment, *notes)))
            continue
        lists.update(found.lists)
        arguments[name] = Noted(found.schema, (f"{name}:", *notes))
        if sensitive:
            exempt = _after_untrusted(name, use.after_untrusted, generalise.Context(
                _namer(f"{name} after untrusted", taken), known, commands, recipients), resource)
            if exempt is not None:
                lists.update(exempt.lists)
                unless[name] = Noted(exempt.schema, (
                    f"{name} after untrusted input: {use.after_untrusted.count} call(s)",
                    *(f"  {path}: {note}" for path, note in exempt.notes)))
        tools.append(Noted(name, tuple(comment)))
    return tools, arguments, unless


def _after_untrusted(name: str, stats: ValueStats, ctx: generalise.Context, resource: str | None
                     ) -> generalise.Generalised | None:
    """The `untrusted_flow` exemption of a sensitive tool: generalised from its calls that followed untrusted input
    in the same session (paying a known payee after reading a bill), so it is as narrow as what was seen there.
    None when it was never called so, or when nothing of those calls generalises (the flow rule then applies)."""
    if stats.count == 0:
        return None
    found = generalise.arguments(stats, ctx, resource)
    return found if found.schema is not None else None


def _identity(activity: WorkflowActivity, old: Any, learner: Learner) -> Any:
    """The current approval gate, plus every operation seen that the approver approved each time; an operation
    seen without approval stays gated by the current list (never exempted by a draft)."""
    gate = _dump(old.identity_changes) if old is not None else {}
    required: list[str] = list(old.identity_changes.require_approval) if old is not None else ["*"]
    approver = learner.approver(activity.workflow_id)
    comment: list[str] = []
    for op in sorted(activity.identity):
        use = activity.identity[op]
        covered = any(fnmatchcase(op, p) for p in required)
        if use.approved and not covered:
            required.append(op)
            covered = True
        comment.append(f"{op}: {use.evidence.describe()}; approved beforehand by {approver or 'no approver'} in "
                       f"{use.approved}/{use.evidence.events}; {'needs approval' if covered else 'not gated'}")
    gate["require_approval"] = sorted(set(required))
    return Noted(gate, tuple(comment)) if comment else gate


def _globs(resources: Resources, kind: str) -> Any:
    """A glob per prefix where several ids were seen (`vault://billing/*`), the exact id where one was; an id that
    looks like a secret value is left out (so it stays out of scope)."""
    out: list[Any] = []
    withheld = 0  # a list of entries; wrapped in a note when some ids were left out
    for prefix in sorted(resources.prefixes):
        entry = resources.prefixes[prefix]
        ids = sorted(i for i in entry.ids if redact_text(i, limit=max(len(i), 1)) == i)
        withheld += len(entry.ids) - len(ids)
        if prefix and (len(ids) >= 2 or entry.overflow) and redact_text(prefix, limit=len(prefix)) == prefix:
            out.append(Noted(_escape_glob(prefix) + "*", (
                f"{kind}: {entry.evidence.describe()}; {len(entry.ids)}{'+' if entry.overflow else ''} ids under "
                "one prefix: its glob",)))
            continue
        note = f"{kind}: {entry.evidence.describe()}; exact id(s)" + (
            f"; more than {MAX_IDS} ids without a common prefix: the rest stay out of scope" if entry.overflow else "")
        out.extend(Noted(_escape_glob(i), (note,)) for i in ids)
    if withheld or resources.dropped:
        return Noted(out, (f"{withheld} id(s) that look like secret values and {resources.dropped} past the cap "
                            "were left out: they stay out of scope",))
    return out


def _escape_glob(text: str) -> str:
    return _GLOB_CHARS.sub(r"[\1]", text)


def _allowed(tool: str, tools: list[str]) -> bool:
    return any(fnmatchcase(tool, pattern) for pattern in tools)


def _namer(tool: str, taken: set[str]) -> generalise.ListNamer:
    """List names from the tool and argument path (`learned_mail_send_to_domains`), unique in the workflow and
    never the name of a top-level list (a workflow list of the same name would extend it)."""

    def name(path: str, kind: str) -> str:
        base = "learned_" + _LIST_CHARS.sub("_", f"{tool} {path} {kind}".lower()).strip("_")
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        return candidate

    return name


def _domains(lists: Iterable[list[str]]) -> DomainSet:
    """Every list entry that is a domain name: an address there generalises by its domain."""
    names = []
    for entries in lists:
        for entry in entries:
            if "." in entry:
                try:
                    names.append(normalise_domain(entry))
                except ValueError:
                    continue
    return DomainSet(names)


def _dump(model: BaseModel, **kwargs: Any) -> dict[str, Any]:
    """A matrix model as the YAML a person would write: defaults left out, durations as `900s`, enums as text."""
    value = _yamlable(model.model_dump(exclude_defaults=True, **kwargs))
    assert isinstance(value, dict)
    return value


def _yamlable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _yamlable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_yamlable(v) for v in value]
    if isinstance(value, timedelta):
        ms = round(value.total_seconds() * 1000)
        return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
    if isinstance(value, Enum):
        return value.value
    return value
