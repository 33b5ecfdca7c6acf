"""What every ingest format returns: the events it could read and a located reason for everything else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from warden.contract.events import ActivityEvent


@dataclass(frozen=True)
class Rejection:
    """Why one message (or one element of a batch) cannot be processed."""

    code: str
    detail: str
    index: int | None = None  # position inside a batch message

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass
class Decoded:
    events: list[ActivityEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


# An ingest format: one Kafka message's bytes and the size limit in, events and rejections out. Never raises.
Decoder = Callable[[bytes | None, int], Decoded]
