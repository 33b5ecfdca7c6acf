"""The incident's pure core, its Slack rendering and the outbox's stages: keys, grouping, lifecycle, who may act,
safe text, dedup and retry timing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from responders.incidents import (
    TRANSITIONS,
    Action,
    Decision,
    IncidentView,
    Status,
    StepView,
    TransitionError,
    approvers,
    authorise,
    authorise_owner,
    check_transition,
    escalation_deadline,
    escalation_note,
    incident_key,
    joins,
)
from responders.notifiers.base import AnyNotice, FindsRoot, LeaseEnded, Notice, TryLater, Undeliverable, send_deadline
from responders.notifiers.console.notifier import ConsoleNotifier
from responders.notifiers.slack import render
from responders.notifiers.slack.notifier import SlackNotifier
from responders.outbox.stages import Retry, dedup, notice_of
from responders.store.notices import Claimed, NoticeKind, Posted
from service.demo.slack_api_server import SlackApiServer
from service.runtime.catalogue import CATALOGUE
from tests.conftest import SLACK_TOKEN
from tests.support.incident_helpers import POLICY, finding
from warden.contract.actors import Actor
from warden.contract.findings import EscalationRef, FindingOwners, OwnerRef
from warden.contract.matrix import Matrix, Owner
from warden.contract.redact import redact_text
from warden.kit.retry import Backoff
from warden.policy import PolicyError, build_policy

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
T = TypeVar("T")


def view(agent: str = "billing-agent-1", **changes: object) -> IncidentView:
    f = finding(agent, "shell.exec")
    base = IncidentView(
        id=7, key=incident_key(f.rule, f.agent_id, f.target), status=Status.open, rule=f.rule,
        severity=f.severity.value, title=f.title, agent_id=f.agent_id, workflow=f.workflow, target=f.target,
        frameworks=tuple(f.frameworks), evidence=dict(f.evidence), owners=f.owners, count=1, first_seen=T0,
        last_seen=T0, opened_at=T0, escalation_step=0, policy_sha256=f.policy_sha256,
    )
    return replace(base, **changes)  # type: ignore[arg-type]  # changes are IncidentView fields by name


def test_the_incident_key_is_rule_agent_and_target() -> None:
    key = incident_key("unapproved_tool", "a1", "shell.exec")
    assert key == incident_key("unapproved_tool", "a1", "shell.exec") and len(key) == 64
    assert len({key, incident_key("secret_access", "a1", "shell.exec"), incident_key("unapproved_tool", "a2",
                "shell.exec"), incident_key("unapproved_tool", "a1", "net.fetch")}) == 4
    assert incident_key("r", "a\0b", "c") != incident_key("r", "a", "b\0c")


def test_a_repeat_joins_within_the_window_of_the_last_one() -> None:
    assert joins(T0, T0 + timedelta(minutes=59), 3600)
    assert joins(T0, T0 - timedelta(minutes=5), 3600)  # a late event still joins
    assert not joins(T0, T0 + timedelta(minutes=61), 3600)


ALLOWED = {(Status.open, Status.acknowledged), (Status.open, Status.false_positive),
           (Status.acknowledged, Status.resolved), (Status.acknowledged, Status.false_positive)}


@pytest.mark.parametrize(("current", "target"), [(c, t) for c in Status for t in Status])
def test_the_lifecycle_is_open_then_acknowledged_then_resolved_or_a_false_positive_from_either(
    current: Status, target: Status
) -> None:
    assert ((current, target) in ALLOWED) is (target in TRANSITIONS[current])
    if (current, target) in ALLOWED:
        # None by its type; the assertion keeps an allowed transition answering nothing should that type change
        assert check_transition(current, target) is None  # type: ignore[func-returns-value]
    else:
        with pytest.raises(TransitionError, match=f"an incident that is {current.value} cannot become {target.value}"):
            check_transition(current, target)


def test_escalation_deadlines_follow_the_frozen_chain() -> None:
    chain = finding("billing-agent-1").owners.escalation  # finance-ops 10m, secops 20m, ciso 30m
    assert escalation_deadline(chain, 0, T0) == T0 + timedelta(minutes=10)
    assert escalation_deadline(chain, 2, T0) == T0 + timedelta(minutes=30)
    assert escalation_deadline(chain, 3, T0) is None


def test_a_repeat_exactly_one_window_after_the_last_still_joins() -> None:
    assert joins(T0, T0 + timedelta(hours=1), 3600)
    assert not joins(T0, T0 + timedelta(hours=1, microseconds=1), 3600)


def chain_of(*timeouts_s: int, approves: tuple[int, ...] = ()) -> FindingOwners:
    """billing-agent-1's frozen owners with an escalation chain of these ack timeouts (secops, ciso, finance-ops,
    ...); the steps whose index is in `approves` may approve containment once the approval climbed."""
    owners = finding("billing-agent-1").owners
    people = [owners.escalation[1].owner, owners.escalation[2].owner, owners.escalation[0].owner]
    steps = [EscalationRef(owner=people[i % 3], ack_timeout=timedelta(seconds=t), approves=i in approves)
             for i, t in enumerate(timeouts_s)]
    return owners.model_copy(update={"escalation": steps})


@pytest.mark.parametrize(("timeouts", "step", "note"), [
    ((600, 1200, 1800), 0, "first on the escalation chain (step 1 of 3)"),
    ((600, 1200, 1800), 1, "step 2 of 3: not acknowledged within 10m of step 1"),
    ((600, 1200, 1800), 2, "step 3 of 3: not acknowledged within 20m of step 2"),
    ((59, 1), 1, "step 2 of 2: not acknowledged within 59s of step 1"),
    ((60, 1), 1, "step 2 of 2: not acknowledged within 1m of step 1"),
    ((150, 1), 1, "step 2 of 2: not acknowledged within 2m of step 1"),  # whole minutes
])
def test_an_escalation_note_says_which_step_of_how_many_and_how_long_the_last_one_waited(
    timeouts: tuple[int, ...], step: int, note: str
) -> None:
    assert escalation_note(chain_of(*timeouts), step) == note


def test_approval_climbs_from_the_named_approver_to_the_approving_steps_in_chain_order() -> None:
    owners = chain_of(60, 60, 60, approves=(0, 2))  # secops and finance-ops approve; ciso does not
    assert [o.id for o in approvers(owners, 0)] == ["sam"]
    assert [o.id for o in approvers(owners, 1)] == ["sam", "secops"]
    assert [o.id for o in approvers(owners, 2)] == ["sam", "secops", "finance-ops"]
    assert [o.id for o in approvers(owners, 9)] == ["sam", "secops", "finance-ops"]
    nobody = owners.model_copy(update={"approver": None})
    assert approvers(nobody, 0) == [], "no approver named: nobody, until the approval climbs"
    assert [o.id for o in approvers(nobody, 1)] == ["secops"]
    assert authorise(Action.approve, owners, "slack", "U0RIN") is None, "secops approves only once climbed"
    assert authorise(Action.approve, owners, "slack", "U0RIN", approval_level=1) == owners.escalation[0].owner
    assert authorise(Action.release, owners, "slack", "U0SAM") == owners.approver


def test_an_owner_named_by_id_may_take_an_action_by_the_same_rule_as_a_click_and_nobody_else() -> None:
    owners = chain_of(60, 60, approves=(0,))  # secops approves once climbed; ciso never does
    responder = owners.responder
    assert authorise_owner(Action.approve, owners, "sam") == owners.approver
    assert authorise_owner(Action.approve, owners, "secops") is None, "secops approves only once climbed"
    assert authorise_owner(Action.approve, owners, "secops", approval_level=1) == owners.escalation[0].owner
    assert authorise_owner(Action.deny, owners, "ciso", approval_level=2) is None, "ciso's step does not approve"
    assert authorise_owner(Action.acknowledge, owners, responder.id) == responder
    assert authorise_owner(Action.resolve, owners, "ciso") == owners.escalation[1].owner
    assert authorise_owner(Action.acknowledge, owners, "mallory") is None, "an id on no chain acts for nobody"


def test_the_containment_line_reads_the_ledger_the_gate_and_the_decision() -> None:
    assert view().containment_status == "no playbook bound to this finding"
    assert view(containment=WAITING).containment_status == "awaiting approval by Sam Okafor: 2 proposed"
    climbed = view(containment=WAITING, owners=chain_of(60, approves=(0,)), approval_level=1)
    assert climbed.containment_status == "awaiting approval by Sam Okafor or Security Operations: 2 proposed"
    unnamed = view(containment=WAITING, owners=chain_of(60).model_copy(update={"approver": None}))
    assert unnamed.containment_status == "awaiting approval by nobody: no approver is named: 2 proposed"
    closed = view(status=Status.false_positive, containment=WAITING)
    assert closed.containment_status == "closed (false_positive) without a containment decision: 2 proposed"
    ran = (replace(WAITING[0], status="done"), replace(WAITING[1], status="failed"))
    approved = view(containment=ran, decision=Decision("approve", "sam", Actor("slack", "U0SAM"), T0))
    assert approved.containment_status == "containment approved by sam: 1 done, 1 failed"
    denied = view(containment=WAITING, decision=Decision("deny", "sam", Actor("slack", "U0SAM"), T0))
    assert denied.containment_status == "containment denied by sam: 2 proposed", "decided: no longer awaiting"
    assert view(containment=ran).containment_status == "1 done, 1 failed", "an auto gate: no decision to show"


def test_a_quarantine_holds_until_a_release_is_done() -> None:
    quarantine = StepView("contain_agent", 1, "quarantine_agent", "done", "auto", False)
    release = StepView("release", 0, "release", "done", "approver", False)
    assert view(containment=(quarantine,)).quarantined
    assert not view(containment=(replace(quarantine, status="failed"),)).quarantined
    assert not view(containment=(quarantine, release)).quarantined
    assert view(containment=(quarantine, replace(release, status="proposed"))).quarantined
    assert not view(containment=(replace(quarantine, action="revoke_token"),)).quarantined


def test_views_and_decisions_are_snapshots_nobody_can_change() -> None:
    for snapshot in (view(), Decision("approve", "sam", Actor("slack", "U0SAM"), T0), WAITING[0]):
        with pytest.raises(FrozenInstanceError):
            snapshot.status = "changed"  # type: ignore[misc, union-attr]  # frozen; a Decision has no status at all


@pytest.mark.parametrize(("action", "user", "acts_for"), [
    (Action.acknowledge, "U0TOMAS", "finance-ops"),  # a member of the responder team
    (Action.false_positive, "U0RIN", "secops"),  # a member of a team on the escalation chain
    (Action.resolve, "U0CISO", "ciso"),  # a person on the chain
    (Action.acknowledge, "U0SAM", None),  # the approver is not a responder
    (Action.approve, "U0SAM", "sam"),
    (Action.deny, "U0SAM", "sam"),
    (Action.approve, "U0TOMAS", None),
    (Action.acknowledge, "C0FINOPS", None),  # a channel id is not a person
    (Action.acknowledge, "", None),
])
def test_who_may_act_comes_from_the_frozen_owners(action: Action, user: str, acts_for: str | None) -> None:
    owner = authorise(action, finding("billing-agent-1").owners, "slack", user)
    assert (owner.id if owner else None) == acts_for


def test_a_team_without_members_cannot_be_acted_for() -> None:
    owners = finding("billing-agent-1").owners
    lone = owners.model_copy(update={"responder": OwnerRef(id="t", kind="team", contacts={"slack": "C0T"}),
                                     "escalation": []})
    assert authorise(Action.acknowledge, lone, "slack", "U0TOMAS") is None


ADVERSARIAL = "<!channel> <!here|here> <@U0EVIL> <#C0EVIL> <https://evil.example|docs> & a > b"


def all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_every_untrusted_string_is_escaped_in_blocks_and_fallback() -> None:
    inc = view(agent=f"bot {ADVERSARIAL}", evidence={f"k {ADVERSARIAL}": ADVERSARIAL}, target=ADVERSARIAL,
               title=ADVERSARIAL, workflow=ADVERSARIAL, tags=(ADVERSARIAL,))
    rendered = all_text(render.incident_blocks(inc)) + render.fallback(inc) + render.repeat_note(inc)
    for live in ("<!channel>", "<!here", "<@U0EVIL>", "<#C0EVIL>", "<https://", "a > b", " & a"):
        assert live not in rendered, live
    assert "&lt;!channel&gt;" in rendered and "&lt;https://evil.example|docs&gt;" in rendered
    assert "&amp; a &gt; b" in rendered


def test_only_well_formed_matrix_ids_become_mentions() -> None:
    assert render.who(OwnerRef(id="sam", name="Sam", contacts={"slack": "U0SAM"})) == "<@U0SAM> (Sam)"
    assert render.who(OwnerRef(id="ops", name="Ops", kind="team", contacts={"slack": "C0OPS"})) == "Ops (<#C0OPS>)"
    assert render.who(OwnerRef(id="x", name="<!channel>", contacts={"slack": "<!channel>"})) == "&lt;!channel&gt;"


def test_secrets_are_redacted_before_rendering() -> None:
    inc = view(evidence={"arguments": "Authorization: Bearer abcdefghijklmnop1234 and sk-proj-0123456789abcdefghij"})
    rendered = all_text(render.incident_blocks(inc)) + render.repeat_note(inc)
    assert "abcdefghijklmnop1234" not in rendered and "sk-proj-0123456789abcdefghij" not in rendered
    assert "[REDACTED]" in rendered


def test_redaction_is_idempotent_so_evidence_is_not_mangled_downstream() -> None:
    once = redact_text("token=abc123 password='x y' {secret=s}")
    assert redact_text(once) == once == "token=[REDACTED] password=[REDACTED] {secret=[REDACTED]}"


def labels(inc: IncidentView) -> list[str]:
    return [b["text"]["text"] for b in render.buttons(inc)]


WAITING = (StepView("contain_agent", 0, "revoke_token", "proposed", "approver", False),
           StepView("contain_agent", 1, "quarantine_agent", "proposed", "approver", False))


def test_the_buttons_follow_the_status_and_the_gate() -> None:
    assert labels(view()) == ["Acknowledge", "False positive", "Silence 1 h"]  # no playbook bound: nothing to approve
    gated = view(containment=WAITING)
    assert labels(gated) == ["Acknowledge", "Approve containment", "Deny containment", "False positive",
                             "Silence 1 h"]
    text = all_text(render.incident_blocks(gated))
    assert "Approving runs:" in text
    assert "`contain_agent`: revoke_token (proposed) → quarantine_agent (proposed)" in text
    assert "awaiting approval by Sam Okafor" in text
    acked = view(status=Status.acknowledged, status_by="finance-ops", containment=WAITING)
    assert labels(acked) == ["Resolve", "Approve containment", "Deny containment", "False positive", "Silence 1 h"]
    decided = replace(acked, decision=Decision("deny", "sam", Actor("slack", "U0SAM"), T0), containment=tuple(
        replace(s, status="denied") for s in WAITING))
    assert labels(decided) == ["Resolve", "False positive", "Silence 1 h"]
    assert "containment denied by sam: 2 denied" in all_text(render.incident_blocks(decided))
    assert labels(view(status=Status.resolved, containment=WAITING)) == []
    assert {b["value"] for b in render.buttons(gated)} == {"7"}


def test_a_dry_run_step_says_what_it_would_have_done() -> None:
    dry = (StepView("hold_refund", 0, "webhook", "dry_run", "approver", True, "POST <https://x|y> signed"),)
    text = all_text(render.incident_blocks(view(containment=dry)))
    assert "webhook (dry run: would POST &lt;https://x|y&gt; signed)" in text


def test_a_quarantine_in_effect_offers_release_even_after_the_incident_closed() -> None:
    done = (StepView("quarantine_agent", 0, "quarantine_agent", "done", "auto", False),)
    assert labels(view(containment=done)) == ["Acknowledge", "False positive", "Silence 1 h", "Release quarantine"]
    assert labels(view(status=Status.resolved, containment=done)) == ["Release quarantine"]
    released = (*done, StepView("release", 0, "release", "done", "approver", False))
    assert labels(view(status=Status.resolved, containment=released)) == []


def test_a_huge_evidence_value_stays_within_slack_limits() -> None:
    inc = view(evidence={f"k{i}": "&" * 1000 for i in range(10)})
    for block in render.incident_blocks(inc):
        texts = [block["text"]["text"]] if "text" in block else [f["text"] for f in block.get("fields", [])]
        assert all(len(t) <= 3000 for t in texts)


def test_only_teams_list_members_and_slack_members_must_be_user_ids() -> None:
    ops = Owner(name="Ops", kind="team", contacts={"slack": "C0OPS"}, members={"slack": ["U0A", "W0B"]})
    assert ops.members == {"slack": ["U0A", "W0B"]}
    with pytest.raises(ValidationError, match="members are for teams"):
        Owner(name="Sam", kind="person", contacts={"slack": "U0SAM"}, members={"slack": ["U0SAM"]})
    doc = POLICY.matrix.model_dump()
    doc["owners"]["secops"]["members"] = {"slack": ["U0ALEX", "C0OPS"]}
    with pytest.raises(PolicyError, match=r"owners\.secops\.members\.slack\.1: 'C0OPS' is not a slack identity"):
        build_policy(Matrix.model_validate(doc), CATALOGUE, sha256="t")


async def test_a_superseded_incidents_root_is_never_found_as_the_root_of_its_successor(
    slack_api: SlackApiServer,
) -> None:
    slack = SlackNotifier(SLACK_TOKEN, slack_api.base_url, timeout_s=1.0)
    old, successor = view(id=7), view(id=8)  # the same key: the window passed and the next repeat opened #8
    assert old.key == successor.key
    with send_deadline(time.monotonic() + 10):
        posted = await slack.send(Notice(NoticeKind.root, old, old.owners.responder))
    assert await slack.find_root(old, old.owners.responder) == posted, "an interrupted root is found again"
    assert await slack.find_root(successor, successor.owners.responder) is None, (
        "the successor must post its own root, not thread under the superseded incident's")


# -- the outbox's stages, around a notifier that only records what it is asked -------------------------------------


class Recording:
    """A notifier that records its calls; `finds` is what find_root answers."""

    name = "recording"
    send_bound_s = 7.0

    def __init__(self, finds: Posted | None = None) -> None:
        self.sent: list[Notice] = []
        self.looked = 0
        self.finds = finds

    async def send(self, notice: AnyNotice) -> Posted:
        assert isinstance(notice, Notice), "these tests send incident notices only"
        self.sent.append(notice)
        return Posted("here", f"sent-{len(self.sent)}")


class FindingRecording(Recording):
    async def find_root(self, incident: IncidentView, target: OwnerRef) -> Posted | None:
        self.looked += 1
        return self.finds


class Unleased:
    """Runs each notifier call at once, as a lease that is always held would."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def run(self, bound_s: float, call: Callable[[], Awaitable[T]], what: str) -> T:
        self.calls.append((bound_s, what))
        return await call()


def claimed(kind: NoticeKind = NoticeKind.root, attempts: int = 1, root: Posted | None = None) -> Claimed:
    inc = view()
    return Claimed(id=1, claim="c1", notifier="recording", kind=kind, attempts=attempts,
                   target=inc.owners.responder, note=None, incident=inc, root=root)


async def test_dedup_never_posts_a_root_twice() -> None:
    stored = Posted("C0FINOPS", "1.0001")
    plain, finder = Recording(), FindingRecording(finds=Posted("C0FINOPS", "1.0002"))
    lease = Unleased()
    assert await dedup(plain, claimed(root=stored), notice_of(claimed(root=stored)), lease) == stored  # stored ref
    assert lease.calls == [], "nothing to call, nothing to lease"
    assert await dedup(finder, claimed(attempts=2), notice_of(claimed(attempts=2)), lease) == Posted(
        "C0FINOPS", "1.0002")
    assert plain.sent == [] and finder.sent == [] and finder.looked == 1
    assert lease.calls == [(7.0, "look-up of an earlier root")], "the look-up runs under the renewed lease"
    assert await dedup(finder, claimed(attempts=1), notice_of(claimed()), lease) == Posted("here", "sent-1")
    assert finder.looked == 1, "a first claim of a root row: no earlier claim can have posted it, no look-up"
    assert lease.calls[-1] == (7.0, "send")
    assert await dedup(plain, claimed(attempts=2), notice_of(claimed(attempts=2)), lease) == Posted("here", "sent-1")
    assert not isinstance(plain, FindsRoot) and isinstance(finder, FindsRoot)


async def test_a_follow_up_goes_in_its_notifiers_thread_or_is_undeliverable() -> None:
    plain = Recording()
    root = Posted("C0FINOPS", "1.0001")
    reply = claimed(NoticeKind.repeat, root=root)
    assert await dedup(plain, reply, notice_of(reply), Unleased()) == Posted("here", "sent-1")
    assert plain.sent[0].root == root
    orphan = claimed(NoticeKind.update, root=None)  # claimed without a root: its root was dead-lettered
    with pytest.raises(Undeliverable, match="recording root message was dead-lettered"):
        await dedup(plain, orphan, notice_of(orphan), Unleased())


def test_retries_are_due_after_the_kits_backoff_until_the_attempts_are_spent() -> None:
    retry = Retry(Backoff(initial_s=5, max_s=float("inf")), max_attempts=5)
    assert [retry.next_attempt(n, T0) for n in (1, 2, 3, 4, 5)] == [
        T0 + timedelta(seconds=5), T0 + timedelta(seconds=10), T0 + timedelta(seconds=20),
        T0 + timedelta(seconds=40), None]


async def test_slack_requests_and_retries_go_out_only_while_the_lease_lasts(slack_api: SlackApiServer) -> None:
    slack = SlackNotifier(SLACK_TOKEN, slack_api.base_url, timeout_s=1.0)
    assert slack.send_bound_s == 14.0  # 2 calls × (4 tries + 3 waits) × 1 s: what the outbox leases a send for
    assert SlackNotifier(SLACK_TOKEN, timeout_s=10.0).send_bound_s == 140.0 and ConsoleNotifier().send_bound_s == 1
    inc = view()
    notice = Notice(NoticeKind.root, inc, inc.owners.responder)
    with send_deadline(time.monotonic() + 0.9), pytest.raises(LeaseEnded):  # less than one call timeout left
        await slack.send(notice)
    assert slack_api.requests == []
    slack_api.fail("chat.postMessage", status=429, retry_after=1)
    with send_deadline(time.monotonic() + 1.5), pytest.raises(TryLater) as later:  # no time to wait 1 s and retry
        await slack.send(notice)
    assert later.value.after_s == 1 and len(slack_api.requests) == 1
    slack_api.fail("chat.postMessage", status=429, retry_after=2)  # longer than a call timeout: the outbox waits
    with pytest.raises(TryLater, match="rate limited for 2s"):
        await slack.send(notice)
    assert len(slack_api.requests) == 2 and slack_api.roots() == []
    with pytest.raises(TryLater, match="rate limited for another"):  # the whole client waits, not only that call
        await slack.send(notice)
    assert len(slack_api.requests) == 2
    await asyncio.sleep(slack.window.remaining())
    with send_deadline(time.monotonic() + 5):
        await slack.send(notice)
    assert len(slack_api.roots()) == 1
