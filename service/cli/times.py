"""A point in time on the command line: ISO-8601 (UTC unless it gives an offset, as `incidents list --since`
reads it) or a duration before now in the matrix's own units (`90s`, `15m`, `24h`, `7d`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click
from pydantic import TypeAdapter, ValidationError

from warden.contract.matrix import Duration

_DURATION: TypeAdapter[Any] = TypeAdapter(Duration)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOW = "warden.times.now"


def parse_when(text: str, now: datetime) -> datetime:
    """`text` as an aware UTC datetime; ValueError saying what is accepted."""
    text = text.strip()
    if text[:1].isdigit() and text[-1:].isalpha() and text[-1:] not in "Zz":
        try:
            ago: timedelta = _DURATION.validate_python(text)
            return now - ago
        except ValidationError as exc:
            reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ValueError(reason) from None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO-8601 (2026-11-02T10:00:00Z, 2026-11-02) nor a time before now "
                         "(30m, 24h, 7d)") from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(UTC)


class When(click.ParamType):
    """A click parameter of `parse_when`. Every time of one invocation is relative to the same moment, taken when
    its first time is read (`--since 2h --until 1h` is one hour, exactly), not when the module was imported."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        now = ctx.meta.setdefault(_NOW, datetime.now(UTC)) if ctx is not None else datetime.now(UTC)
        try:
            return parse_when(str(value), now)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the epoch, exactly (a Kafka record's time): no float rounding at a millisecond edge."""
    return (when - _EPOCH) // timedelta(milliseconds=1)


def iso(when: datetime) -> str:
    """`2026-11-02T10:00:00Z`: how a time is written back (milliseconds only when it has them)."""
    spec = "milliseconds" if when.microsecond else "seconds"
    return when.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")
