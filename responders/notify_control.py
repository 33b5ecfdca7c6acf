"""Notification control's pure core, in Alertmanager's order: an incident's labels, whether an inhibition rule or a
silence mutes it, and which group (digest) it joins. The store applies it inside the transaction that records a page
(`responders/storms.py`); nothing here touches the database.

The configuration is the live matrix's `notifications` (a workflow's own fields over the matrix's), read when a page
is recorded, as Alertmanager reads its current configuration: a policy edit applies to the next page."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from warden.contract.matchers import Matcher, matches_all, parse_matchers
from warden.contract.matrix import Matrix, Notifications, Severity

SEVERITY_RANK = {s.value: i for i, s in enumerate(Severity)}
CRITICAL = Severity.critical.value


@dataclass(frozen=True)
class Route:
    """One route's grouping: the labels of its group key, and its waits (seconds)."""

    group_by: tuple[str, ...] = ("workflow", "rule", "severity")
    wait_s: float = 0.0
    interval_s: float = 300.0
    repeat_s: float = 4 * 3600.0
    top: int = 5

    def as_json(self) -> dict[str, object]:
        return {"group_by": list(self.group_by), "wait_s": self.wait_s, "interval_s": self.interval_s,
                "repeat_s": self.repeat_s, "top": self.top}

    @classmethod
    def of_json(cls, doc: Mapping[str, object]) -> Route:
        return cls(tuple(doc.get("group_by") or ()), float(doc.get("wait_s", 0.0)),  # type: ignore[arg-type]
                   float(doc.get("interval_s", 300.0)), float(doc.get("repeat_s", 14400.0)),  # type: ignore[arg-type]
                   int(doc.get("top", 5)))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Inhibition:
    """A parsed inhibit rule."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]
    index: int = 0

    def targets(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.target, labels)

    def inhibits(self, source: Mapping[str, str], target: Mapping[str, str]) -> bool:
        """`source` (an open incident) mutes `target` (a new page) under this rule."""
        return (matches_all(self.source, source) and matches_all(self.target, target)
                and all(source.get(label, "") == target.get(label, "") for label in self.equal))

    @property
    def reads_quarantine(self) -> bool:
        return any(m.label == "quarantined" for m in self.source) or "quarantined" in self.equal

    def inhibits_but_quarantine(self, source: Mapping[str, str], target: Mapping[str, str]) -> bool:
        """`inhibits`, leaving out what depends on the source's quarantine (read from the ledger only if needed)."""
        return (matches_all((m for m in self.source if m.label != "quarantined"), source)
                and matches_all(self.target, target)
                and all(source.get(label, "") == target.get(label, "") for label in self.equal
                        if label != "quarantined"))

    def as_json(self) -> dict[str, object]:
        return {"rule": self.index, "source_matchers": [m.text for m in self.source],
                "target_matchers": [m.text for m in self.target], "equal": list(self.equal)}


def _route(top: Notifications, own: object | None) -> Route:
    def pick(name: str) -> object:
        value = getattr(own, name, None) if own is not None else None
        return getattr(top, name) if value is None else value

    group_by = pick("group_by")
    wait, interval, repeat = pick("group_wait"), pick("group_interval"), pick("repeat_interval")
    assert isinstance(wait, timedelta) and isinstance(interval, timedelta) and isinstance(repeat, timedelta)
    return Route(tuple(group_by), wait.total_seconds(), interval.total_seconds(),  # type: ignore[arg-type]
                 repeat.total_seconds(), int(pick("digest_top")))  # type: ignore[call-overload]


@dataclass(frozen=True)
class NotifyPolicy:
    """The routes (per workflow, and the default for agents no workflow lists) and the inhibit rules."""

    default: Route = field(default_factory=Route)
    routes: Mapping[str, Route] = field(default_factory=dict)
    inhibitions: tuple[Inhibition, ...] = ()

    def route_for(self, workflow: str | None) -> Route:
        return self.routes.get(workflow or "", self.default)

    @classmethod
    def of(cls, matrix: Matrix) -> NotifyPolicy:
        top = matrix.notifications
        rules = tuple(Inhibition(parse_matchers(r.source_matchers), parse_matchers(r.target_matchers),
                                 tuple(r.equal), i) for i, r in enumerate(top.inhibit_rules))
        return cls(_route(top, None), {wf_id: _route(top, wf.notifications) for wf_id, wf in
                                       matrix.workflows.items()}, rules)


def default_policy() -> NotifyPolicy:
    """The built-in defaults (a matrix that says nothing): group by workflow, rule and severity, and the default
    inhibit rule."""
    return NotifyPolicy.of(Matrix.model_validate({"defaults": {"security_owner": "secops"}}))


class PolicySource:
    """The live matrix's notification policy, made once per policy (by its sha256) from the callable the runtime
    gives the store (`Incidents.live_matrix`); the built-in defaults when there is none (tests, tools without a
    policy)."""

    def __init__(self) -> None:
        self._cached: tuple[str, NotifyPolicy] | None = None
        self._default = default_policy()

    def get(self, live: Callable[[], tuple[str, Matrix]] | None) -> NotifyPolicy:
        if live is None:
            return self._default
        sha, matrix = live()
        if self._cached is None or self._cached[0] != sha:
            self._cached = (sha, NotifyPolicy.of(matrix))
        return self._cached[1]


def labels_of(*, workflow: str | None, rule: str, severity: str, agent: str, target: str, responder: str,
              tier: str, quarantined: bool) -> dict[str, str]:
    """An incident's labels, as matchers see them (strings, empty when unknown)."""
    return {"workflow": workflow or "", "rule": rule, "severity": severity, "agent": agent, "target": target,
            "responder": responder, "tier": tier, "quarantined": "true" if quarantined else "false"}


def group_key(responder: str, group_by: Iterable[str], labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The group's key (sha256, per responder: one route, one channel per notifier) and the labels it groups by."""
    values = {label: labels.get(label, "") for label in group_by}
    digest = hashlib.sha256(json.dumps([responder, sorted(values.items())]).encode()).hexdigest()
    return digest, values


def outranks(severity: str, than: str) -> bool:
    """True when `severity` is higher than `than`: such a page never joins a lower group's digest (never merged
    down); it pages and leads the group from then on."""
    return SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(than, 0)


def joins_group(*, last_at: datetime, now: datetime, interval_s: float) -> bool:
    """A page joins the group's digest when it comes within the group interval of the group's last page or
    member (the interval's edge included); after a quiet interval the group is over and the next page leads a new
    one."""
    return now - last_at <= timedelta(seconds=interval_s)


def first_page_at(*, now: datetime, severity: str, wait_s: float) -> datetime:
    """When the first page of a new group goes: after the route's group wait, except a critical one, at once."""
    return now if severity == CRITICAL or wait_s <= 0 else now + timedelta(seconds=wait_s)


def reannounce(*, posted_at: datetime, now: datetime, repeat_s: float) -> bool:
    """A group's digest message older than the repeat interval is not updated any more: the next digest is a new
    message (the group announced again), so a group that keeps firing is announced at most once per interval."""
    return now - posted_at >= timedelta(seconds=repeat_s)
