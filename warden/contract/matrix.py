"""The ownership matrix as validated data: who owns, approves, detects and responds for each workflow."""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from warden.contract.containment import Gate, Issuer, Playbook
from warden.contract.matchers import Label, parse_matcher

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> object:
    """Accept `90s`, `15m`, `2h`, `1d` or a number of seconds, as Alertmanager does."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h)")
        return timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


def _positive(value: timedelta) -> timedelta:
    """Every duration of the matrix is a window, a timeout or an interval: zero or less would make it never apply
    (`window: 0s`) or fire at once (`ack_timeout: -60`), so it is an error, not a setting."""
    if value <= timedelta(0):
        raise ValueError(f"a duration must be longer than zero, not {value.total_seconds():g}s")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError(f"a duration cannot be negative, not {value.total_seconds():g}s")
    return value


# A wait that may be zero (`group_wait: 0s`: the first page of a group goes at once).
Wait = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_not_negative)]


def _matcher_text(value: str) -> str:
    """A matcher must parse (label, operator, value, a valid regex); kept as written."""
    parse_matcher(value)
    return value


MatcherText = Annotated[str, AfterValidator(_matcher_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Risk(StrEnum):
    low = "low"
    high = "high"
    critical = "critical"


class Mode(StrEnum):
    chat = "chat"
    agentic = "agentic"


class Severity(StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    def raised(self, steps: int = 1) -> Severity:
        order = list(Severity)
        return order[min(order.index(self) + steps, len(order) - 1)]


CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")
# The named roles of a workflow, in the order they are shown; the first three must be named.
ROLES = ("approver", "detector", "responder", "business_owner", "data_owner")
REQUIRED_ROLES = ROLES[:3]


class Owner(_Strict):
    """A person or team that can be named in a role, reachable through one or more notifiers."""

    name: str
    kind: Literal["person", "team"] = "person"
    contacts: dict[str, str] = Field(
        default_factory=dict,
        description="Address per notifier: {slack: U… or C…, email: …}. The notifier decides what it accepts.",
    )
    members: dict[str, list[str]] = Field(
        default_factory=dict,
        description="For a team, per notifier: the identities who may act for it (e.g. slack: [U…, W…]).",
    )

    @model_validator(mode="after")
    def _members_only_for_teams(self) -> Owner:
        if any(self.members.values()) and self.kind != "team":
            raise ValueError("members are for teams; a person acts as their own contact")
        return self


class EscalationStep(_Strict):
    owner: str
    ack_timeout: Duration = timedelta(minutes=15)
    approves: bool = Field(False, description="May approve containment once an approval times out and reaches here.")


class IdentityScope(_Strict):
    """Identity operations that need a human approval, and from which role."""

    require_approval: list[str] = Field(default_factory=lambda: ["*"], description="Operation globs.")
    approval_from: Literal["approver", "business_owner", "data_owner"] = "approver"
    window: Duration = timedelta(minutes=30)


class Limit(_Strict):
    max: int = Field(ge=1)
    window: Duration


class Limits(_Strict):
    tool_calls: Limit | None = None
    identical_retries: Limit | None = None


# --- Argument scope, named lists, the tool catalogue and session flow rules (issue 12) ---------------------------

class Category(StrEnum):
    """What a tool does, as far as the detectors care: the catalogue tags each tool with some of these."""

    secret_store = "secret_store"
    identity_admin = "identity_admin"
    payment = "payment"
    external_comm = "external_comm"
    destructive = "destructive"
    code_exec = "code_exec"
    untrusted_input = "untrusted_input"


# The categories a call after untrusted input must not fall in (the built-in `untrusted_flow`).
SENSITIVE_AFTER_UNTRUSTED = (Category.payment, Category.external_comm, Category.identity_admin,
                             Category.destructive, Category.code_exec)
ARGUMENT_PATH = r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$"
JsonSchema = dict[str, Any]


class ToolSpec(_Strict):
    """One tool of the catalogue: its categories and the argument that names its resource, target or recipient."""

    categories: list[Category] = Field(default_factory=list)
    resource: str | None = Field(None, pattern=ARGUMENT_PATH,
                                 description="Dotted argument path of the resource, target or recipient.")
    operation: str | None = Field(None, description="identity_admin: the identity operation (default: tool name).")


class FlowRule(_Strict):
    """After a call in one of `after`, a call in one of `then` in the same session, within `within_steps` tool
    calls or `within` event time, is a finding, unless the later call's arguments satisfy `unless[tool]`."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    after: list[Category] = Field(min_length=1)
    then: list[Category] = Field(min_length=1)
    within_steps: int | None = Field(20, ge=1)
    within: Duration | None = timedelta(minutes=30)
    unless: dict[str, JsonSchema] = Field(
        default_factory=dict, description="Tool name -> JSON Schema its arguments must meet to be allowed.")
    severity: Severity | None = Field(None, description="Default: follows the workflow's risk tier.")
    mode: RuleMode = Field(default_factory=lambda: RuleMode.enforce)  # RuleMode is defined further down
    frameworks: list[str] = Field(default_factory=list)


class UntrustedFlow(_Strict):
    """A workflow's settings for the built-in `untrusted_flow` (untrusted input, then a sensitive call)."""

    within_steps: int | None = Field(20, ge=1)
    within: Duration | None = timedelta(minutes=30)
    unless: dict[str, JsonSchema] = Field(
        default_factory=dict, description="Tool name -> JSON Schema its arguments must meet to be allowed.")


class ApprovalGate(_Strict):
    """Actions a gateway must hold for a human approval before it takes them (docs/approvals.md)."""

    categories: list[Category] = Field(
        default_factory=list, description="Tool categories whose calls need the approver's approval first.")
    timeout: Duration = Field(timedelta(minutes=15), description="Unanswered this long: the request climbs to the "
                              "next escalation step; after the last one, it expires (docs/approvals.md).")


class Scope(_Strict):
    """What a workflow is approved to do. Anything else is out of scope."""

    tools: list[str] = Field(default_factory=list, description="Tool names or globs.")
    data: list[str] = Field(default_factory=list, description="Data/retrieval resource globs the data owner allows.")
    max_classification: Literal["public", "internal", "confidential", "restricted"] = "internal"
    secrets: list[str] = Field(default_factory=list, description="Secret globs in the workflow's grant.")
    identity_changes: IdentityScope = Field(default_factory=IdentityScope)
    limits: Limits = Field(default_factory=Limits)
    # issue 12: argument constraints and session flow rules
    arguments: dict[str, JsonSchema] = Field(
        default_factory=dict, description="Tool name -> JSON Schema (plus named keywords) its arguments must meet.")
    flows: list[FlowRule] = Field(default_factory=list, description="Session flow rules of this workflow.")
    untrusted_flow: UntrustedFlow = Field(default_factory=UntrustedFlow)
    approvals: ApprovalGate = Field(default_factory=ApprovalGate)  # issue 17


class Tier(StrEnum):
    """How a finding reaches people (docs/scope.md, "Response tiers"): page a responder now, hold the action for an
    approval (on the approval path; an event already done is collected for review instead), collect it into the
    responder's periodic review digest, or only record it."""

    page = "page"
    hold = "hold"
    review = "review"
    log = "log"

    def on_event_path(self) -> Tier:
        """`hold` is for the approval path: an action that already happened is collected for review instead."""
        return Tier.review if self is Tier.hold else self


class TierRule(_Strict):
    """Which tier the findings of some rules get, for calls of some tool categories; the first rule that matches
    wins (a workflow's own before the top-level ones, both before the built-in defaults)."""

    rules: list[str] = Field(min_length=1, description="Rule ids or globs (fnmatch) this applies to.")
    categories: list[Category] = Field(
        default_factory=list, description="Only for calls of tools in one of these categories; empty: any.")
    tier: Tier = Field(description="On the event path. `hold` there means review: the action already happened.")
    approval: Tier | None = Field(
        None, description="On the approval path, when it differs: page denies, hold asks the approver, review and "
        "log allow (and record). Default: the same as `tier`.")


class ProvenanceScope(_Strict):
    """Where a sensitive call's values may come from (the built-in `provenance` rule, docs/scope.md)."""

    sensitive: list[Category] = Field(
        default_factory=lambda: list(SENSITIVE_AFTER_UNTRUSTED),
        description="Calls of tools in these categories have their argument values traced to their source.")
    untrusted_tools: list[str] = Field(
        default_factory=list, description="More tools (names or globs) whose results are untrusted, beside the "
        "catalogue's `untrusted_input` tools.")
    trusted_tools: list[str] = Field(
        default_factory=list, description="Tools (names or globs) whose results count as the user's own (a "
        "company directory, the user's own records).")
    within: Duration = Field(timedelta(minutes=30), description="A session's values are kept this long after its "
                             "last event (event time); rebuilding state reads the log this far back.")


DEFAULT_GROUP_BY: tuple[Label, ...] = ("workflow", "rule", "severity")


class RouteNotifications(_Strict):
    """How one route's pages are grouped (Alertmanager's route `group_by`, `group_wait`, `group_interval`,
    `repeat_interval`): a workflow's own values override the matrix's `notifications`, field by field."""

    group_by: list[Label] | None = Field(
        None, description="Labels whose values make the group key (with the responder); default workflow, rule, "
        "severity.")
    group_wait: Wait | None = Field(None, description="How long the first page of a new group waits (never for a "
                                    "critical one); default 0s.")
    group_interval: Duration | None = Field(
        None, description="Pages of the same group within this long of its last one join its digest; default 5m.")
    repeat_interval: Duration | None = Field(
        None, description="A group that keeps firing is announced again (a new digest message) at most this often; "
        "default 4h.")
    digest_top: int | None = Field(None, ge=1, le=50, description="Agents and targets a digest names; default 5.")


class InhibitRule(_Strict):
    """Alertmanager's inhibit rule: while an open incident matches `source_matchers`, a new page matching
    `target_matchers` whose `equal` labels have the same values is recorded and grouped, not paged."""

    source_matchers: list[MatcherText] = Field(min_length=1)
    target_matchers: list[MatcherText] = Field(default_factory=list, description="Empty: any incident.")
    equal: list[Label] = Field(default_factory=list)


def _default_inhibit_rules() -> list[InhibitRule]:
    """A critical incident whose agent is quarantined mutes that agent's other pages: it is contained already."""
    return [InhibitRule(source_matchers=['severity="critical"', 'quarantined="true"'], equal=["agent"])]


class Notifications(_Strict):
    """Notification control for pages, in Alertmanager's order: inhibition, silences (in the database), grouping
    into digests. The route fields are the defaults of every workflow."""

    group_by: list[Label] = Field(default_factory=lambda: list(DEFAULT_GROUP_BY))
    group_wait: Wait = timedelta(0)
    group_interval: Duration = timedelta(minutes=5)
    repeat_interval: Duration = timedelta(hours=4)
    digest_top: int = Field(5, ge=1, le=50)
    inhibit_rules: list[InhibitRule] = Field(default_factory=_default_inhibit_rules)


class Workflow(_Strict):
    """A unit of accountable LLM work: its agents, its risk, its named roles and its scope."""

    description: str = ""
    agents: list[str] = Field(default_factory=list)
    risk: Risk = Risk.high
    mode: Mode = Mode.agentic
    approver: str | None = None
    detector: str | None = None
    responder: str | None = None
    business_owner: str | None = None
    data_owner: str | None = None
    escalation: list[EscalationStep] = Field(default_factory=list)
    scope: Scope = Field(default_factory=Scope)
    group_window: Duration = Field(timedelta(hours=1), description="Repeats within this window join one incident.")
    lists: dict[str, list[str]] = Field(  # issue 12
        default_factory=dict, description="Named lists: extends a top-level list of the same name, or adds one.")
    tiers: list[TierRule] = Field(
        default_factory=list, description="This workflow's response tiers, tried before the top-level ones.")
    provenance: ProvenanceScope = Field(default_factory=ProvenanceScope)
    notifications: RouteNotifications = Field(
        default_factory=RouteNotifications, description="This workflow's grouping, over the matrix's notifications.")


class RuleMode(StrEnum):
    enforce = "enforce"
    shadow = "shadow"


class BuiltinRule(_Strict):
    """Overrides for a built-in detector."""

    enabled: bool = True
    severity: Severity | None = None
    mode: RuleMode = RuleMode.enforce
    exempt_chat_low_risk: bool = Field(False, description="Skip low-risk chat workflows for this rule.")


class CustomRule(_Strict):
    """A CEL condition over `event` and `workflow`."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    condition: str
    severity: Severity = Severity.medium
    tags: list[str] = Field(default_factory=list)
    output: str = ""
    exceptions: list[str] = Field(default_factory=list, description="CEL conditions; a match suppresses the rule.")
    mode: RuleMode = RuleMode.enforce
    frameworks: list[str] = Field(default_factory=list, description="OWASP ASI/LLM ids and NIST AI RMF function.")
    gate: Literal["approval"] | None = Field(
        None, description="approval: a gateway's request this rule matches needs the approver's approval first.")
    owner: str | None = Field(
        None, description="Who is told (a `rule_error` finding) when the rule cannot be evaluated on an event; "
        "default: defaults.security_owner.")


class Rules(_Strict):
    builtin: dict[str, BuiltinRule] = Field(default_factory=dict)
    custom: list[CustomRule] = Field(default_factory=list)
    tiers: list[TierRule] = Field(
        default_factory=list, description="Response tiers per rule and tool category; see docs/scope.md.")


class PlaybookBinding(_Strict):
    """Which findings trigger which playbook, and whose approval gates it."""

    rules: list[str] = Field(min_length=1)
    playbook: str
    gate: Gate = Gate.approver
    min_severity: Severity = Severity.high
    risk: list[Risk] = Field(default_factory=list, description="Workflow risk tiers it applies to; empty: all.")
    approval_timeout: Duration = Field(timedelta(minutes=15), description="Then the next owner who approves is asked.")


class Defaults(_Strict):
    security_owner: str = Field(description="Owner who receives findings about agents no workflow lists.")
    escalation: list[EscalationStep] = Field(default_factory=list)


class Matrix(_Strict):
    """The whole ownership matrix, as one validated document."""

    version: Literal[1] = 1
    defaults: Defaults
    owners: dict[str, Owner] = Field(default_factory=dict)
    workflows: dict[str, Workflow] = Field(default_factory=dict)
    rules: Rules = Field(default_factory=Rules)
    playbooks: list[PlaybookBinding] = Field(default_factory=list)
    playbook_definitions: dict[str, Playbook] = Field(
        default_factory=dict, description="The policy's own playbooks; one with a shipped id replaces it.")
    issuers: dict[str, Issuer] = Field(default_factory=dict, description="OAuth servers whose tokens may be revoked.")
    # issue 12: named lists (known payees, company domains, ...) and the tool catalogue
    lists: dict[str, list[str]] = Field(default_factory=dict, description="Named lists that constraints refer to.")
    tools: dict[str, ToolSpec] = Field(default_factory=dict, description="The tool catalogue: name or glob -> spec.")
    notifications: Notifications = Field(default_factory=Notifications, description="Grouping and inhibition of "
                                         "pages (docs/incidents.md, alert storms).")
