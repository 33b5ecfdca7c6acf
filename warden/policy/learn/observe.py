"""Fold recorded events, one at a time, into per-workflow activity: the tools each workflow called and with what,
the data and secrets it touched, the identity changes it made and whether its approver approved them. Memory is
bounded whatever the input's length (warden/policy/learn/stats.py)."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field

from warden.contract.events import ActivityEvent, Decision, Kind
from warden.contract.matrix import CLASSIFICATIONS, Category
from warden.policy.learn.stats import Evidence, ValueStats
from warden.policy.model import Policy
from warden.policy.tools import ToolCatalogue

STUB_PREFIX = "learned-"
MAX_STUBS = 1_000  # unknown agents given a stub workflow; past it they are counted, not drafted
MAX_TOOLS = 1_000  # distinct tools per workflow
MAX_DIRECTORIES = 1_024  # distinct resource prefixes per workflow and kind
MAX_IDS = 64  # distinct resource ids kept per prefix (more: the prefix's glob)
MAX_OPERATIONS = 256
MAX_APPROVED_REFS = 10_000  # approvals remembered per workflow (a change refers to a recent one)
MAX_TAINTED_SESSIONS = 100_000  # sessions remembered as having read untrusted input (least recent dropped)
_STUB_CHARS = re.compile(r"[^a-z0-9]+")


@dataclass
class ToolUse:
    """One tool of one workflow: its evidence and every argument's summary."""

    evidence: Evidence = field(default_factory=Evidence)
    arguments: ValueStats = field(default_factory=ValueStats)
    after_untrusted: ValueStats = field(default_factory=ValueStats)  # the calls made after untrusted input


@dataclass
class Prefix:
    """Resource ids under one prefix (`vault://billing/`): a glob when several were seen."""

    evidence: Evidence = field(default_factory=Evidence)
    ids: set[str] = field(default_factory=set)
    overflow: bool = False


@dataclass
class Resources:
    """Data or secret ids by prefix, capped."""

    prefixes: dict[str, Prefix] = field(default_factory=dict)
    dropped: int = 0  # ids not kept: past the prefix cap

    def add(self, resource_id: str, ev: ActivityEvent) -> None:
        key = prefix_of(resource_id)
        entry = self.prefixes.get(key)
        if entry is None:
            if len(self.prefixes) >= MAX_DIRECTORIES:
                self.dropped += 1
                return
            entry = self.prefixes[key] = Prefix()
        entry.evidence.add(ev.ts, ev.session_id)
        if resource_id not in entry.ids:
            if len(entry.ids) < MAX_IDS:
                entry.ids.add(resource_id)
            else:
                entry.overflow = True


def prefix_of(resource_id: str) -> str:
    """The id up to its last `/` (`vault://billing/`), or "" when it has none beyond a scheme's `://`."""
    cut = resource_id.rfind("/")
    head = resource_id[:cut + 1]
    return "" if cut < 0 or head.endswith("://") or head == "/" else head


@dataclass
class IdentityUse:
    """One identity operation: how often, and how often the workflow's approver had approved it beforehand."""

    evidence: Evidence = field(default_factory=Evidence)
    approved: int = 0


@dataclass
class WorkflowActivity:
    """Everything observed of one workflow (listed in the current matrix, or a stub for an unknown agent)."""

    workflow_id: str
    stub_agent: str | None = None
    evidence: Evidence = field(default_factory=Evidence)
    tools: dict[str, ToolUse] = field(default_factory=dict)
    tools_dropped: int = 0
    data: Resources = field(default_factory=Resources)
    secrets: Resources = field(default_factory=Resources)
    classification: int = -1  # index into CLASSIFICATIONS of the highest seen
    identity: dict[str, IdentityUse] = field(default_factory=dict)
    approved_refs: OrderedDict[str, None] = field(default_factory=OrderedDict)


@dataclass
class Learner:
    """Streams events into per-workflow activity. `current` maps agents to workflows, gives the tool catalogue and
    each workflow's approver; without it every agent is unknown and gets a stub."""

    current: Policy | None = None
    workflows: dict[str, WorkflowActivity] = field(default_factory=dict)
    events: int = 0
    unowned_dropped: int = 0
    _stubs: dict[str, str] = field(default_factory=dict)
    _tainted: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)
    _catalogue: ToolCatalogue = field(init=False)

    def __post_init__(self) -> None:
        self._catalogue = self.current.tools if self.current is not None else ToolCatalogue({})

    def observe(self, ev: ActivityEvent) -> None:
        """Fold one valid event in."""
        self.events += 1
        activity = self._activity(ev.agent.id)
        if activity is None:
            return
        activity.evidence.add(ev.ts, ev.session_id)
        if ev.kind is Kind.tool_call and ev.tool is not None:
            self._tool_call(activity, ev)
        elif ev.kind is Kind.secret_access and ev.resource is not None:
            activity.secrets.add(ev.resource.id, ev)
        elif ev.kind is Kind.data_access and ev.resource is not None:
            activity.data.add(ev.resource.id, ev)
            level = ev.resource.classification
            if level in CLASSIFICATIONS:
                activity.classification = max(activity.classification, CLASSIFICATIONS.index(level))
        elif ev.kind is Kind.identity_change and ev.identity_change is not None:
            self._identity(activity, ev.identity_change.operation, (ev.event_id, ev.identity_change.target), ev)
        elif ev.kind is Kind.approval and ev.approval is not None:
            self._approval(activity, ev)

    def _tool_call(self, activity: WorkflowActivity, ev: ActivityEvent) -> None:
        assert ev.tool is not None
        name = ev.tool.name
        use = activity.tools.get(name)
        if use is None:
            if len(activity.tools) >= MAX_TOOLS:
                activity.tools_dropped += 1
                return
            use = activity.tools[name] = ToolUse()
        use.evidence.add(ev.ts, ev.session_id)
        use.arguments.add(ev.tool.arguments or {})
        session = (ev.agent.id, ev.session_id) if ev.session_id is not None else None
        if session is not None and session in self._tainted:
            use.after_untrusted.add(ev.tool.arguments or {})
        entry = self._catalogue.entry(name)
        if entry is None:
            return
        if session is not None and Category.untrusted_input in entry.categories:
            self._tainted[session] = None
            self._tainted.move_to_end(session)
            if len(self._tainted) > MAX_TAINTED_SESSIONS:
                self._tainted.popitem(last=False)
        target = entry.argument(ev.tool.arguments)
        if Category.secret_store in entry.categories and isinstance(target, str) and target:
            activity.secrets.add(target, ev)
        if Category.identity_admin in entry.categories:
            refs = (ev.event_id, target) if isinstance(target, str) else (ev.event_id,)
            self._identity(activity, entry.spec.operation or name, refs, ev)

    def _identity(self, activity: WorkflowActivity, operation: str, refs: tuple[str, ...], ev: ActivityEvent) -> None:
        use = activity.identity.get(operation)
        if use is None:
            if len(activity.identity) >= MAX_OPERATIONS:
                return
            use = activity.identity[operation] = IdentityUse()
        use.evidence.add(ev.ts, ev.session_id)
        use.approved += any(ref in activity.approved_refs for ref in refs)

    def _approval(self, activity: WorkflowActivity, ev: ActivityEvent) -> None:
        assert ev.approval is not None
        approver = self.approver(activity.workflow_id)
        if approver is None or ev.approval.approver != approver or ev.approval.decision is not Decision.approved:
            return
        ref = ev.approval.ref or ev.event_id
        activity.approved_refs[ref] = None
        activity.approved_refs.move_to_end(ref)
        if len(activity.approved_refs) > MAX_APPROVED_REFS:
            activity.approved_refs.popitem(last=False)

    def approver(self, workflow_id: str) -> str | None:
        """The owner whose approval an identity change of this workflow needs (None for a stub)."""
        wf = self.current.workflow(workflow_id) if self.current is not None else None
        if wf is None:
            return None
        role: str | None = getattr(wf, wf.scope.identity_changes.approval_from)
        return role

    def _activity(self, agent_id: str) -> WorkflowActivity | None:
        workflow_id = self.current.workflow_id_for(agent_id) if self.current is not None else None
        if workflow_id is None:
            workflow_id = self._stubs.get(agent_id)
            if workflow_id is None:
                if len(self._stubs) >= MAX_STUBS:
                    self.unowned_dropped += 1
                    return None
                workflow_id = self._stubs[agent_id] = stub_id(agent_id)
        activity = self.workflows.get(workflow_id)
        if activity is None:
            stub = None if self.current is not None and workflow_id in self.current.matrix.workflows else agent_id
            activity = self.workflows[workflow_id] = WorkflowActivity(workflow_id, stub_agent=stub)
        return activity


def stub_id(agent_id: str) -> str:
    """A workflow id for an unknown agent: readable, safe in YAML and a terminal, and unique per agent id."""
    readable = _STUB_CHARS.sub("-", agent_id.lower()).strip("-")[:48] or "agent"
    digest = hashlib.blake2b(agent_id.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{STUB_PREFIX}{readable}-{digest}"
