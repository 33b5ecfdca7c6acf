"""The outbox pipeline's decisions, one notification at a time: what it records for each way a send can end
(delivered, claim lost before or after, lease ended, undeliverable, failed then retried or dead-lettered, a
channel's Retry-After), read from what it asked the store to record. The store here records those calls and
answers whether the claim is still held; the notifier records what it was asked to send or raises."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from responders.digests import DigestView
from responders.group_digest import GroupView
from responders.notifiers.base import (
    ApprovalNotice,
    DigestNotice,
    GroupNotice,
    LeaseEnded,
    Notice,
    TryLater,
    Undeliverable,
)
from responders.notifiers.console.notifier import ConsoleNotifier
from responders.outbox.stages import (
    CLOCK_SKEW_S,
    REASON_MAX_CHARS,
    RENEWAL_GRACE_S,
    ClaimLost,
    Lease,
    Pipeline,
    Retry,
    dead_letter,
    dedup,
    notice_of,
    record,
)
from responders.store.notices import (
    ApprovalView,
    Claimed,
    ClaimedApproval,
    ClaimedDigest,
    ClaimedGroup,
    NoticeKind,
    Posted,
)
from tests.unit.responders.test_incidents import view
from warden.kit.retry import Backoff
from warden.telemetry import metrics

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@dataclass
class Store:
    """Records each write the pipeline asks for; `held` says whether this worker still holds the claim."""

    held: bool = True
    renews: bool = True  # the lease's renewal (held, or lost before the send)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    async def renew(self, claimed: Any, until: datetime) -> bool:
        self.calls.append(("renew", until))
        return self.renews

    async def give_back(self, claimed: Any, reason: str) -> bool:
        self.calls.append(("give_back", reason))
        return self.held

    async def mark_delivered(self, claimed: Any, posted: Posted, now: datetime) -> bool:
        self.calls.append(("mark_delivered", (posted, now)))
        return self.held

    async def retry_later(self, claimed: Any, error: str, at: datetime) -> bool:
        self.calls.append(("retry_later", (error, at)))
        return self.held

    async def defer(self, claimed: Any, error: str, at: datetime) -> bool:
        self.calls.append(("defer", (error, at)))
        return self.held

    async def dead_letter(self, claimed: Any, error: str, now: datetime) -> bool:
        self.calls.append(("dead_letter", (error, now)))
        return self.held

    async def rate_limited(self, notifier: str, channel: str, seconds: float, now: datetime) -> None:
        self.calls.append(("rate_limited", (notifier, channel, seconds, now)))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    @property
    def claims(self) -> Store:
        """The claims room (the fenced writes): this recorder plays it."""
        return self

    @property
    def outbox(self) -> Store:
        """The outbox room (a channel's rate limit): this recorder plays it."""
        return self


class Notifier:
    """Sends by recording, or raises what it is given."""

    name = "rec"
    send_bound_s = 3.0

    def __init__(self, raises: Exception | None = None) -> None:
        self.sent: list[Any] = []
        self.raises = raises

    async def send(self, notice: Any) -> Posted:
        if self.raises is not None:
            raise self.raises
        self.sent.append(notice)
        return Posted("C0", f"ts-{len(self.sent)}")


def claimed(kind: NoticeKind = NoticeKind.root, attempts: int = 1, root: Posted | None = None) -> Claimed:
    inc = view()
    return Claimed(id=31, claim="tok", notifier="rec", kind=kind, attempts=attempts, target=inc.owners.responder,
                   note="n", incident=inc, root=root)


def pipeline(store: Store, notifier: Notifier, max_attempts: int = 3) -> Pipeline:
    return Pipeline(notifier, store, retry=Retry(Backoff(initial_s=10, max_s=1000), max_attempts),  # type: ignore[arg-type]
                    clock=lambda: NOW, fallback=ConsoleNotifier())


def _count(counter: Any, **labels: str) -> float:
    """A counter's total over the label sets that carry `labels` (prometheus_client's public collect())."""
    return float(sum(s.value for m in counter.collect() for s in m.samples
               if s.name.endswith("_total") and labels.items() <= s.labels.items()))


def test_a_notice_says_it_is_retried_from_the_second_attempt_and_is_keyed_by_its_row() -> None:
    first, second = notice_of(claimed(attempts=1)), notice_of(claimed(attempts=2))
    assert isinstance(first, Notice) and isinstance(second, Notice)
    assert (first.retried, second.retried, first.key, first.note) == (False, True, "31", "n")


async def test_a_delivery_is_recorded_under_the_renewed_lease_and_counted() -> None:
    store, notifier = Store(), Notifier()
    delivered = _count(metrics.NOTIFICATIONS_DELIVERED, notifier="rec", kind="root")
    await pipeline(store, notifier).deliver(claimed())
    assert store.names() == ["renew", "mark_delivered"]
    assert store.calls[1][1] == (Posted("C0", "ts-1"), NOW)
    assert len(notifier.sent) == 1
    assert _count(metrics.NOTIFICATIONS_DELIVERED, notifier="rec", kind="root") == delivered + 1


async def test_a_lease_is_renewed_for_the_call_its_grace_and_the_clock_skew() -> None:
    store = Store()
    lease = Lease(store, claimed(), lambda: NOW)  # type: ignore[arg-type]

    async def call() -> str:
        return "answered"

    assert await lease.run(4.0, call, "send") == "answered"
    assert store.calls == [("renew", NOW + timedelta(seconds=RENEWAL_GRACE_S + 4.0 + CLOCK_SKEW_S))]
    lost = Store(renews=False)
    with pytest.raises(ClaimLost, match="another worker claimed it before the send"):
        await Lease(lost, claimed(), lambda: NOW).run(4.0, call, "send")  # type: ignore[arg-type]


async def test_a_claim_lost_before_the_send_sends_nothing_and_records_nothing() -> None:
    store, notifier = Store(renews=False), Notifier()
    lost = _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="before_send")
    await pipeline(store, notifier).deliver(claimed())
    assert store.names() == ["renew"] and notifier.sent == []
    assert _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="before_send") == lost + 1


@pytest.mark.parametrize("held", [True, False])
async def test_a_lease_that_ended_before_the_send_gives_the_row_back(held: bool,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "warden.outbox")
    store = Store(held=held)
    lost = _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="before_send")
    await pipeline(store, Notifier(raises=LeaseEnded("too slow"))).deliver(claimed())
    assert store.names() == ["renew", "give_back"] and store.calls[1][1] == "lease ended: too slow"
    assert _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="before_send") == lost + (0 if held else 1)
    assert ("given back" in caplog.text) is held


async def test_an_undeliverable_notice_is_dead_lettered_at_once() -> None:
    store = Store()
    dead = _count(metrics.NOTIFICATIONS_DEAD, notifier="rec", kind="root")
    await pipeline(store, Notifier(raises=Undeliverable("no such channel"))).deliver(claimed())
    assert store.names() == ["renew", "dead_letter"] and store.calls[1][1] == ("no such channel", NOW)
    assert _count(metrics.NOTIFICATIONS_DEAD, notifier="rec", kind="root") == dead + 1


async def test_a_dead_letter_on_a_lost_claim_is_not_counted() -> None:
    store = Store(held=False, renews=False)
    dead = _count(metrics.NOTIFICATIONS_DEAD, notifier="rec", kind="repeat")
    reply = claimed(NoticeKind.repeat, root=None)  # a follow-up whose root is dead: undeliverable
    await pipeline(store, Notifier()).deliver(reply)
    assert store.names() == ["dead_letter"]
    assert _count(metrics.NOTIFICATIONS_DEAD, notifier="rec", kind="repeat") == dead


@pytest.mark.parametrize(("attempts", "due_in_s"), [(1, 10.0), (2, 20.0)])
async def test_a_failed_attempt_is_retried_after_the_backoff_with_its_reason_redacted(attempts: int,
                                                                                    due_in_s: float) -> None:
    store = Store()
    retries = _count(metrics.NOTIFICATION_RETRIES, notifier="rec")
    failure = RuntimeError("boom token=hunter2-secret-value " + "x" * 400)
    await pipeline(store, Notifier(raises=failure)).deliver(claimed(attempts=attempts))
    assert store.names() == ["renew", "retry_later"]
    reason, at = store.calls[1][1]
    assert at == NOW + timedelta(seconds=due_in_s)
    assert reason.startswith("RuntimeError: boom") and "hunter2-secret-value" not in reason
    assert reason.startswith("RuntimeError: boom token=[REDACTED] " + "x" * (REASON_MAX_CHARS - 36))
    assert "x" * (REASON_MAX_CHARS - 35) not in reason  # cut at REASON_MAX_CHARS, the rest counted
    assert _count(metrics.NOTIFICATION_RETRIES, notifier="rec") == retries + 1


async def test_the_last_attempt_that_fails_is_dead_lettered_not_retried() -> None:
    store = Store()
    await pipeline(store, Notifier(raises=RuntimeError("down")), max_attempts=3).deliver(claimed(attempts=3))
    assert store.names() == ["renew", "dead_letter"] and store.calls[1][1] == ("RuntimeError: down", NOW)


@pytest.mark.parametrize(("after_s", "due_in_s"), [(60.0, 60.0), (2.0, 10.0), (10.0, 10.0)])
async def test_a_retry_after_without_a_channel_is_an_attempt_due_no_sooner_than_it_says(after_s: float,
                                                                                        due_in_s: float) -> None:
    store = Store()
    await pipeline(store, Notifier(raises=TryLater("slow down", after_s))).deliver(claimed(attempts=1))
    assert store.names() == ["renew", "retry_later"]
    assert store.calls[1][1][1] == NOW + timedelta(seconds=due_in_s)


@pytest.mark.parametrize("held", [True, False])
async def test_a_channels_retry_after_defers_without_counting_an_attempt_even_the_last(held: bool) -> None:
    store = Store(held=held)
    limited = _count(metrics.CHANNEL_RATE_LIMITED, notifier="rec")
    lost = _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="on_failure")
    failure = TryLater("rate limited", 7.5, channel="C0BUSY")
    await pipeline(store, Notifier(raises=failure), max_attempts=1).deliver(claimed(attempts=1))
    assert store.names() == ["renew", "rate_limited", "defer"]
    assert store.calls[1][1] == ("rec", "C0BUSY", 7.5, NOW)
    assert store.calls[2][1] == ("TryLater: rate limited", NOW + timedelta(seconds=7.5))
    assert _count(metrics.CHANNEL_RATE_LIMITED, notifier="rec") == limited + 1
    assert _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="on_failure") == lost + (0 if held else 1)


async def test_a_retry_on_a_lost_claim_is_not_counted_as_a_retry() -> None:
    store = Store(held=False)  # renewed for the send, lost before the retry was written
    retries = _count(metrics.NOTIFICATION_RETRIES, notifier="rec")
    await pipeline(store, Notifier(raises=RuntimeError("x"))).deliver(claimed(attempts=1))
    assert store.names() == ["renew", "retry_later"]
    assert _count(metrics.NOTIFICATION_RETRIES, notifier="rec") == retries


async def test_a_delivery_recorded_after_the_claim_was_lost_is_an_error_and_not_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    store = Store(held=False)  # renewed for the send, lost before the delivery was recorded
    delivered = _count(metrics.NOTIFICATIONS_DELIVERED, notifier="rec", kind="root")
    after = _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="after_send")
    await pipeline(store, Notifier()).deliver(claimed())
    assert _count(metrics.NOTIFICATIONS_DELIVERED, notifier="rec", kind="root") == delivered
    assert _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="after_send") == after + 1
    assert any(r.levelname == "ERROR" and "claim lost after send" in r.getMessage() for r in caplog.records)


async def test_a_root_delivery_counts_an_alert_and_observes_the_time_to_notify() -> None:
    store = Store()
    c = claimed()
    alerts = _count(metrics.ALERTS, channel="rec", rule=c.incident.rule)
    assert await record(store, c, Posted("C0", "1"), notifier="rec", now=NOW) is True  # type: ignore[arg-type]
    assert _count(metrics.ALERTS, channel="rec", rule=c.incident.rule) == alerts + 1
    update = replace(c, kind=NoticeKind.update)
    assert await record(store, update, Posted("C0", "2"), notifier="rec", now=NOW) is True  # type: ignore[arg-type]
    assert _count(metrics.ALERTS, channel="rec", rule=c.incident.rule) == alerts + 1  # an update is no alert
    repeat = replace(c, kind=NoticeKind.repeat)
    assert await record(store, repeat, Posted("C0", "3"), notifier="rec", now=NOW) is True  # type: ignore[arg-type]
    assert _count(metrics.ALERTS, channel="rec", rule=c.incident.rule) == alerts + 2
    assert await record(Store(held=False), c, Posted("C0", "4"), notifier="rec",  # type: ignore[arg-type]
                        now=NOW) is False
    assert _count(metrics.ALERTS, channel="rec", rule=c.incident.rule) == alerts + 2



def _digest() -> ClaimedDigest:
    inc = view()
    digest = DigestView(id=5, responder=inc.owners.responder, since=NOW, until=NOW, incidents=(1, 2), findings=3,
                        by_rule=(), agents=(), targets=())
    return ClaimedDigest(id=41, claim="tok", notifier="rec", attempts=1, target=inc.owners.responder, digest=digest)


def _group(attempts: int = 1, root: Posted | None = None) -> ClaimedGroup:
    inc = view()
    group = GroupView(id=9, key="k", epoch=1, labels={}, severity="high", responder=inc.owners.responder,
                      leader_id=1, leaders=1, members=2, findings=2, opened_at=NOW, last_at=NOW, agents=(),
                      agents_total=0, targets=(), targets_total=0, lines=())
    return ClaimedGroup(id=51, claim="tok", notifier="rec", attempts=attempts, target=inc.owners.responder,
                        group=group, root=root)


def test_a_digest_and_a_group_refresh_become_their_own_notices() -> None:
    digest = notice_of(_digest())
    assert isinstance(digest, DigestNotice) and (digest.digest.id, digest.kind) == (5, NoticeKind.digest)
    root = Posted("C0", "1.1")
    for attempts, retried in ((1, False), (2, True), (3, True)):
        group = notice_of(_group(attempts, root))
        assert isinstance(group, GroupNotice)
        assert (group.group.id, group.root, group.retried) == (9, root, retried)


@pytest.mark.parametrize("which", ["digest", "group"])
async def test_a_digest_or_group_refresh_is_sent_and_recorded_like_any_notification(which: str) -> None:
    store, notifier = Store(), Notifier()
    c: Any = _digest() if which == "digest" else _group()
    delivered = _count(metrics.NOTIFICATIONS_DELIVERED, notifier="rec", kind=c.kind.value)
    after = _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="after_send")
    await pipeline(store, notifier).deliver(c)
    assert store.names() == ["renew", "mark_delivered"] and store.calls[1][1] == (Posted("C0", "ts-1"), NOW)
    assert len(notifier.sent) == 1 and type(notifier.sent[0]) is (DigestNotice if which == "digest" else GroupNotice)
    assert _count(metrics.NOTIFICATIONS_DELIVERED, notifier="rec", kind=c.kind.value) == delivered + 1
    assert _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="after_send") == after  # recorded, not lost
    assert await record(store, c, Posted("C0", "x"), notifier="rec", now=NOW) is True  # type: ignore[arg-type]


@pytest.mark.parametrize("held", [True, False])
async def test_a_dead_letter_says_whether_the_claim_was_still_held(held: bool) -> None:
    store = Store(held=held)
    lost = _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="on_failure")
    reply = claimed(NoticeKind.repeat, root=None)  # undeliverable: its root is dead
    await pipeline(store, Notifier()).deliver(reply)
    assert store.names() == ["dead_letter"]
    assert _count(metrics.OUTBOX_CLAIMS_LOST, notifier="rec", when="on_failure") == lost + (0 if held else 1)
    assert await dead_letter(store, reply, "r", notifier="rec", notice=notice_of(reply),  # type: ignore[arg-type]
                             fallback=ConsoleNotifier(), now=NOW) is held


class Asker(Notifier):
    """A notifier that asks for approvals (`AsksApproval`), recording each ask."""

    async def send_approval(self, notice: ApprovalNotice) -> Posted:
        self.sent.append(notice)
        return Posted("D0", f"ask-{len(self.sent)}")


def _approval(attempts: int = 1) -> ClaimedApproval:
    inc = view()
    approval = ApprovalView(id="req-1", agent_id="iam-agent-1", workflow="access-provisioner",
                            action={"tool": {"name": "directory.grant_role"}}, reason="needs a human",
                            status="pending", decided_by=None, requested_at=NOW)
    return ClaimedApproval(id=61, claim="tok", notifier="rec", kind=NoticeKind.approval, attempts=attempts,
                           target=inc.owners.responder, note="Escalated to you", approval=approval, buttons=False,
                           messages=((Posted("D0", "1.1"), inc.owners.responder),))


def test_an_approval_ask_becomes_its_own_notice_keyed_by_its_row_and_retried_from_the_second_attempt() -> None:
    for attempts, retried in ((1, False), (2, True), (3, True)):
        c = _approval(attempts)
        n = notice_of(c)
        assert isinstance(n, ApprovalNotice)
        assert (n.kind, n.approval, n.target, n.note, n.buttons, n.messages, n.retried, n.key) == (
            NoticeKind.approval, c.approval, c.target, "Escalated to you", False, c.messages, retried, "61")


async def test_an_approval_ask_is_sent_by_a_notifier_that_asks_for_approvals_and_recorded() -> None:
    store, notifier = Store(), Asker()
    await pipeline(store, notifier).deliver(_approval())
    assert store.names() == ["renew", "mark_delivered"] and store.calls[1][1] == (Posted("D0", "ask-1"), NOW)
    assert [type(n) for n in notifier.sent] == [ApprovalNotice]


async def test_an_approval_ask_to_a_notifier_that_does_not_ask_for_approvals_is_dead_lettered() -> None:
    store, notifier = Store(), Notifier()
    await pipeline(store, notifier).deliver(_approval())
    assert store.names() == ["dead_letter"] and "does not ask for approvals" in store.calls[0][1][0]
    assert notifier.sent == []


async def test_an_approval_row_and_its_notice_go_together_or_not_at_all() -> None:
    """Either side naming an approval makes it an ask: an approval row with an incident's notice is undeliverable
    (never sent as an incident message), and an ask's notice goes to send_approval whatever row it came from."""
    store, asker = Store(), Asker()
    lease = Lease(store, _approval(), lambda: NOW)  # type: ignore[arg-type]
    with pytest.raises(Undeliverable, match="does not ask for approvals"):
        await dedup(asker, _approval(), notice_of(claimed()), lease)
    ask = notice_of(_approval())
    assert await dedup(asker, claimed(), ask, lease) == Posted("D0", "ask-1")
    assert asker.sent == [ask]
