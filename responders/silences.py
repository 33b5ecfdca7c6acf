"""Silences (Alertmanager's, as `amtool silence add|query|expire` makes them): matcher-based, time-boxed mutes with a
required comment and author. A page whose labels match an active silence is recorded and grouped like any other, its
containment runs, and nobody is paged: its timeline says `silenced` with the silence's id.

Every change to a silence (created, expired) is an entry of its own hash chain (`silence_timeline`, chain
`silence:<id>`), so `warden audit verify` covers them with the incidents' timelines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders.audit import GENESIS, entry_hash, silence_chain, silence_content
from responders.db import session_factory
from responders.db.models import Silence, SilenceEntry
from warden.contract.matchers import Matcher, matches_all, parse_matchers
from warden.contract.redact import redact_text

COMMENT_MAX = 2000
MAX_ACTIVE = 1000  # silences looked at per page; more active at once is an operator's mistake, said in the log
ONE_HOUR = timedelta(hours=1)


class SilenceError(ValueError):
    """A silence that cannot be made as asked: no matcher, no comment or author, an end before its start."""


@dataclass(frozen=True)
class SilenceView:
    id: int
    matchers: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime
    comment: str
    author: str
    created_by: str
    created_at: datetime
    expired_by: str | None

    def state(self, now: datetime) -> str:
        """pending (starts later), active, or expired, as amtool shows them."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {"id": self.id, "matchers": list(self.matchers), "starts_at": self.starts_at.isoformat(),
                "ends_at": self.ends_at.isoformat(), "comment": self.comment, "author": self.author,
                "created_by": self.created_by, "created_at": self.created_at.isoformat(),
                "expired_by": self.expired_by, "state": self.state(now)}


def view_of(row: Silence) -> SilenceView:
    return SilenceView(row.id, tuple(row.matchers), row.starts_at, row.ends_at, row.comment, row.author,
                       row.created_by, row.created_at, row.expired_by)


_PARSED: dict[tuple[str, ...], tuple[Matcher, ...]] = {}


def _matchers(texts: Sequence[str]) -> tuple[Matcher, ...]:
    key = tuple(texts)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _PARSED[key] = parse_matchers(key)
    return parsed


async def matching(s: AsyncSession, labels: Mapping[str, str], now: datetime) -> Silence | None:
    """The active silence that mutes a page with these labels: of several, the one that ends last (then the
    oldest), so the timeline names the silence that keeps it quiet longest."""
    active = (await s.execute(
        select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now)
        .order_by(Silence.ends_at.desc(), Silence.id).limit(MAX_ACTIVE)
    )).scalars()
    return next((row for row in active if matches_all(_matchers(row.matchers), labels)), None)


async def trail_entry(s: AsyncSession, silence_id: int, now: datetime, kind: str, *, actor: str,
                      identity: str | None, detail: dict[str, Any]) -> None:
    """Append to the silence's hash chain; its row is locked first, so two writers take turns."""
    await s.execute(select(Silence.id).where(Silence.id == silence_id).with_for_update())
    last = (await s.execute(
        select(SilenceEntry.seq, SilenceEntry.hash).where(SilenceEntry.silence_id == silence_id)
        .order_by(SilenceEntry.seq.desc()).limit(1)
    )).first()
    seq, prev = (1, GENESIS) if last is None else (last[0] + 1, last[1])
    entry = SilenceEntry(silence_id=silence_id, at=now, kind=kind, actor=actor, identity=identity, detail=detail,
                         seq=seq, prev_hash=prev)
    entry.hash = entry_hash(silence_chain(silence_id), seq, prev, silence_content(
        silence_id=silence_id, at=now, kind=kind, actor=actor, identity=identity, detail=detail))
    s.add(entry)
    await s.flush()


def check(matchers: Sequence[str], starts_at: datetime, ends_at: datetime, comment: str, author: str) -> None:
    """Raise SilenceError saying what is wrong with a silence before anything is written."""
    if not matchers:
        raise SilenceError("a silence needs at least one matcher (label=\"value\")")
    try:
        parse_matchers(matchers)
    except ValueError as exc:
        raise SilenceError(str(exc)) from None
    if not comment.strip():
        raise SilenceError("a silence needs a comment: why it mutes these pages")
    if not author.strip():
        raise SilenceError("a silence needs an author: who it is for")
    if ends_at <= starts_at:
        raise SilenceError("a silence must end after it starts")


class Silences:
    """Silences in the database: made, listed and expired by the incident API, the CLI and the Slack button."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = session_factory(engine)

    async def add(self, matchers: Sequence[str], *, starts_at: datetime, ends_at: datetime, comment: str,
                  author: str, identity: str, now: datetime) -> SilenceView:
        check(matchers, starts_at, ends_at, comment, author)
        texts = [m.text for m in parse_matchers(matchers)]  # normalised: quoted, as amtool shows them
        clean_comment = redact_text(comment.strip(), COMMENT_MAX)
        async with self.sessions.begin() as s:
            row = Silence(matchers=texts, starts_at=starts_at, ends_at=ends_at, comment=clean_comment,
                          author=redact_text(author.strip(), 200), created_by=identity, created_at=now)
            s.add(row)
            await s.flush()
            await trail_entry(s, row.id, now, "created", actor=row.author, identity=identity, detail={
                "matchers": texts, "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                "comment": clean_comment})
            return view_of(row)

    async def get(self, silence_id: int) -> SilenceView | None:
        async with self.sessions.begin() as s:
            row = await s.get(Silence, silence_id)
            return None if row is None else view_of(row)

    async def query(self, now: datetime, *, expired: bool = False,
                    labels: Mapping[str, str] | None = None) -> list[SilenceView]:
        """Active and pending silences (with `expired`, the expired ones too), newest first; with `labels`, only
        those that would mute a page with them."""
        query = select(Silence).order_by(Silence.id.desc())
        if not expired:
            query = query.where(Silence.ends_at > now)
        async with self.sessions.begin() as s:
            rows = list((await s.execute(query.limit(MAX_ACTIVE))).scalars())
        views = [view_of(r) for r in rows]
        if labels is not None:
            views = [v for v in views if matches_all(_matchers(v.matchers), labels)]
        return views

    async def expire(self, silence_id: int, *, identity: str, actor: str, now: datetime) -> SilenceView | None:
        """End the silence now; None when it does not exist. Expiring one that ended already changes nothing (the
        caller says so); pages that come after it are paged again."""
        async with self.sessions.begin() as s:
            row = (await s.execute(select(Silence).where(Silence.id == silence_id).with_for_update())
                   ).scalar_one_or_none()
            if row is None:
                return None
            if row.ends_at <= now:
                return view_of(row)
            was = row.ends_at
            row.ends_at = now
            row.starts_at = min(row.starts_at, now)
            row.expired_by = identity
            await trail_entry(s, row.id, now, "expired", actor=actor, identity=identity,
                              detail={"was_ending": was.isoformat()})
            return view_of(row)

    async def active_count(self, now: datetime) -> int:
        async with self.sessions.begin() as s:
            return int((await s.execute(select(func.count()).select_from(Silence).where(
                Silence.starts_at <= now, Silence.ends_at > now))).scalar_one())
