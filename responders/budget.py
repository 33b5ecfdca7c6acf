"""The per-channel send budget, shared by every worker: one token bucket per notifier channel, kept in a database row
(`channel_budgets`) and spent inside the transaction that claims notifications, so two workers never spend the same
token and a channel never sees more than its rate, however many workers run.

Why the database and not partition ownership of the channel: the outbox already claims rows in one short
transaction per pass (`Outbox.claim_due`); taking the channel's tokens there costs one more locked read and
one write per channel in it, and the claim decides which notification goes next (roots before digests and
replies) with the budget in view. A worker that dies holds no tokens (nothing to hand over); Retry-After from the
channel is written to the same row (`blocked_until`), so every worker waits it out, not only the one that was told.

The bucket holds at most `burst - rate` tokens (at least 1): a second's refill adds `rate`, so no window of one
second carries more than `burst` messages (the channel's own burst), and the server's bucket, full when ours is,
keeps one message of margin for the few milliseconds between the claim and the request."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from responders.db.models import ChannelBudget


@dataclass(frozen=True)
class Budget:
    """A channel's rate (messages per second) and burst (messages in any one second)."""

    rate: float = 1.0
    burst: int = 3

    @property
    def capacity(self) -> float:
        return max(1.0, self.burst - self.rate)

    def level(self, tokens: float, at: datetime, now: datetime) -> float:
        """Tokens in the bucket at `now`, from `tokens` at `at`."""
        return min(self.capacity, tokens + max(0.0, (now - at).total_seconds()) * self.rate)

    def ready_in(self, tokens: float, need: int) -> float:
        """Seconds until the bucket holds `need` tokens (0: now)."""
        return max(0.0, (min(need, self.capacity) - tokens) / self.rate)


Channel = tuple[str, str]  # (notifier, channel address)


@dataclass
class Bucket:
    """One channel's bucket during a claim: its level as of `at`, and when the channel may be used again at all.
    `at` never goes back: a claim whose clock reading is older than the row's (it waited for the lock while another
    worker's claim wrote it) refills nothing, instead of crediting the same moment twice."""

    tokens: float
    blocked_until: datetime | None
    at: datetime


async def lock_buckets(s: AsyncSession, dialect: str, channels: Iterable[Channel], budget: Budget,
                       now: datetime) -> dict[Channel, Bucket]:
    """The channels' buckets, each row locked for this transaction (made full if new), at their level now. Rows are
    locked in one order, so two claims touching the same channels never deadlock."""
    wanted = sorted(set(channels))
    if not wanted:
        return {}
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await s.execute(insert(ChannelBudget).values([
        {"notifier": n, "channel": c, "tokens": budget.capacity, "at": now, "blocked_until": None} for n, c in wanted
    ]).on_conflict_do_nothing(index_elements=["notifier", "channel"]))
    rows = (await s.execute(
        select(ChannelBudget).where(tuple_(ChannelBudget.notifier, ChannelBudget.channel).in_(wanted))
        .order_by(ChannelBudget.notifier, ChannelBudget.channel).with_for_update()
    )).scalars()
    return {(r.notifier, r.channel): Bucket(budget.level(r.tokens, r.at, now), r.blocked_until, max(r.at, now))
            for r in rows}


def wait_for(buckets: Mapping[Channel, Bucket], need: Mapping[Channel, int], budget: Budget,
             now: datetime) -> float:
    """Seconds until every channel in `need` can take its messages (0: now)."""
    wait = 0.0
    for channel, n in need.items():
        bucket = buckets[channel]
        if bucket.blocked_until is not None and bucket.blocked_until > now:
            wait = max(wait, (bucket.blocked_until - now).total_seconds())
        wait = max(wait, budget.ready_in(bucket.tokens, n))
    return wait


async def save_buckets(s: AsyncSession, buckets: Mapping[Channel, Bucket]) -> None:
    """Write the levels back (the rows are locked by `lock_buckets` in this transaction)."""
    for (notifier, channel), bucket in buckets.items():
        row = await s.get(ChannelBudget, (notifier, channel))
        assert row is not None  # made by lock_buckets
        row.tokens, row.at = bucket.tokens, bucket.at


async def block(s: AsyncSession, dialect: str, notifier: str, channel: str, *, seconds: float, budget: Budget,
                now: datetime) -> None:
    """The channel said Retry-After: nothing goes to it, from any worker, for `seconds`; its bucket is emptied so
    the messages after the wait come at the rate, not in a burst."""
    until = now + timedelta(seconds=seconds)
    buckets = await lock_buckets(s, dialect, [(notifier, channel)], budget, now)
    bucket = buckets[(notifier, channel)]
    row = await s.get(ChannelBudget, (notifier, channel))
    assert row is not None
    row.blocked_until = until if bucket.blocked_until is None else max(bucket.blocked_until, until)
    row.tokens, row.at = 0.0, max(until, bucket.at)
