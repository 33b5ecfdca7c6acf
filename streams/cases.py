"""Expectation files for a policy, as `opa test` and `amtool config routes test` have them: each case is an event
or a session (events judged in order, fresh state) and the findings it must produce, or none. The events go through
the worker's strict decoder and its own detectors, so a case passes here exactly when the worker would agree."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.detectors import RULE_IDS, DetectorState, detect
from streams.detectors.custom import RULE_ERROR, RuleErrorTally
from streams.ingest import native
from warden.contract.events import ActivityEvent
from warden.contract.findings import Finding
from warden.contract.matrix import Severity, Tier
from warden.policy import Policy
from warden.policy.yaml_lines import read_yaml

MAX_FILE_BYTES = 64 << 20


class Expected(BaseModel):
    """One finding a case must produce; every field given must match, the others are not checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = Field(min_length=1)
    event_id: str | None = None
    severity: Severity | None = None
    tier: Tier | None = Field(None, description="The event path's tier: page, review or log.")
    approval_tier: Tier | None = Field(None, description="The approval path's tier: page, hold, review or log.")
    shadow: bool | None = None
    responder: str | None = Field(None, description="The owner id the finding is routed to.")
    playbooks: list[str] | None = Field(None, description="The containment playbooks it triggers, in order.")
    target: str | None = None

    def matches(self, f: Finding) -> bool:
        """Every field this expectation sets equals the finding's."""
        wanted: dict[str, Any] = self.model_dump(exclude_none=True)
        actual = observed(f)
        return all(actual[key] == value for key, value in wanted.items())

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.model_dump(mode="json", exclude_none=True).items())


def observed(f: Finding) -> dict[str, Any]:
    """A finding as expectations read it."""
    return {"rule": f.rule, "event_id": f.event_id, "severity": f.severity, "tier": f.tier,
            "approval_tier": f.approval_tier, "shadow": f.shadow, "responder": f.owners.responder.id,
            "playbooks": [p.playbook for p in f.containment], "target": f.target}


class CaseSpec(BaseModel):
    """A case as written: a name, one `event` or a session of `events`, and what it must `expect` (`[]`: none)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    event: dict[str, Any] | None = None
    events: list[dict[str, Any]] | None = Field(None, min_length=1)
    expect: list[Expected] = Field(description="Exactly the findings the case must produce; [] for none.")

    @model_validator(mode="after")
    def _one_source(self) -> CaseSpec:
        if (self.event is None) == (self.events is None):
            raise ValueError("give exactly one of `event` (one event) or `events` (a session, in order)")
        return self


class CasesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: list[CaseSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Case:
    """A case with its events decoded by the worker's decoder."""

    name: str
    events: list[ActivityEvent]
    expect: list[Expected]


class CasesError(Exception):
    """The cases file is not valid input: each problem located (path in the file and line when known)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def read_cases(data: bytes, max_event_bytes: int) -> list[Case]:
    """Parse and validate a cases file; each event goes through the worker's strict decoder (`streams.ingest`):
    non-finite numbers, duplicate keys, oversize and too-deep events are refused as the worker refuses them."""
    if len(data) > MAX_FILE_BYTES:
        raise CasesError([f"{len(data)} bytes exceeds the {MAX_FILE_BYTES}-byte limit of a cases file"])
    try:
        read = read_yaml(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CasesError(["not UTF-8 text"]) from None
    except RecursionError:
        raise CasesError(["nested too deep to read"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CasesError([f"line {mark.line + 1 if mark else '?'}: invalid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}"]) from None
    if read.duplicates:
        raise CasesError([f"line {line}: {'.'.join(p)}: key written twice (first at line {first})"
                          for p, line, first in read.duplicates])
    try:
        spec = CasesFile.model_validate(read.document)
    except ValidationError as exc:
        raise CasesError([_at(tuple(str(p) for p in e["loc"]), read.lines) + e["msg"] for e in exc.errors(
            include_url=False)]) from None
    problems: list[str] = []
    cases = []
    for i, c in enumerate(spec.cases):
        raw = [c.event] if c.event is not None else list(c.events or [])
        where = ("cases", str(i), "event") if c.event is not None else ("cases", str(i), "events")
        events: list[ActivityEvent] = []
        for j, item in enumerate(raw):
            at = where if c.event is not None else (*where, str(j))
            decoded, reason = _decode(item, max_event_bytes)
            if decoded is None:
                problems.append(f"{_at(at, read.lines)}{reason}")
            else:
                events.append(decoded)
        cases.append(Case(c.name, events, c.expect))
    if problems:
        raise CasesError(problems)
    return cases


def _decode(item: Mapping[str, Any], max_bytes: int) -> tuple[ActivityEvent | None, str]:
    try:
        raw = json.dumps(item, allow_nan=False, ensure_ascii=False).encode()
    except ValueError:
        return None, "non_finite_number: NaN and Infinity are not JSON"
    except (TypeError, RecursionError) as exc:
        return None, f"not a JSON event ({type(exc).__name__})"
    decoded = native.decode(raw, max_bytes)
    if decoded.rejections:
        r = decoded.rejections[0]
        return None, f"{r.code}: {r.reason}"
    if len(decoded.events) != 1:
        return None, "not_an_object: a case event is one event object"
    return decoded.events[0], ""


def _at(path: tuple[str, ...], lines: Mapping[tuple[str, ...], int]) -> str:
    for n in range(len(path), 0, -1):
        line = lines.get(path[:n])
        if line is not None:
            return f"line {line}: {'.'.join(path)}: "
    return f"{'.'.join(path)}: " if path else ""


@dataclass
class CaseResult:
    """One case judged: what it produced, the expectations it missed and the findings nobody expected."""

    name: str
    findings: list[Finding]
    missing: list[Expected]
    unexpected: list[Finding]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.unexpected


@dataclass
class Run:
    """Every case's result, the rules no case exercised, and the custom rules that raised on some case's event."""

    results: list[CaseResult] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    exercised: set[str] = field(default_factory=set)
    rule_errors: dict[str, RuleErrorTally] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def not_exercised(self) -> list[str]:
        return [r for r in self.rules if r not in self.exercised]


def run_cases(cases: list[Case], policy: Policy) -> Run:
    """Judge each case alone, with fresh detector state, by the worker's `detect`."""
    out = Run(rules=policy_rules(policy))
    for case in cases:
        state = DetectorState()
        findings = [f for ev in case.events for f in detect(ev, policy, state)]
        for rule, tally in state.rule_errors.by_rule.items():
            total = out.rule_errors.setdefault(rule, RuleErrorTally(first_event=tally.first_event, error=tally.error))
            total.count += tally.count
        out.exercised |= {f.rule for f in findings}
        out.results.append(_match(case, findings))
    return out


def _match(case: Case, findings: list[Finding]) -> CaseResult:
    """Pair each expectation with a finding it matches, the most specific expectations first."""
    left = list(findings)
    missing: list[Expected] = []
    for want in sorted(case.expect, key=lambda e: -len(e.model_dump(exclude_none=True))):
        hit = next((f for f in left if want.matches(f)), None)
        if hit is None:
            missing.append(want)
        else:
            left.remove(hit)
    return CaseResult(case.name, findings, missing, left)


def policy_rules(policy: Policy) -> list[str]:
    """Every rule the policy can raise: the enabled built-ins, the custom rules and the workflows' flow rules."""
    builtin = policy.matrix.rules.builtin
    rules = {r for r in RULE_IDS if r != RULE_ERROR.id and (r not in builtin or builtin[r].enabled)}
    rules |= {r.id for r in policy.matrix.rules.custom}
    rules |= {f.id for wf in policy.matrix.workflows.values() for f in wf.scope.flows}
    return sorted(rules)
