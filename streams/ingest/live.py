"""What a live input topic is to the worker: its default name, its setting's description and how its messages are
read (each alone, or held until their agent is known), so that a new live topic is one entry in `INPUTS`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from streams.ingest.base import Decoder
from streams.ingest.otlp import Batch
from streams.ingest.otlp_agents import AgentResolver, Bounds
from streams.ingest.otlp_wire import Encoding
from warden.policy import Policy


class HoldingIngest(Protocol):
    """An ingest that may hold events until their agent is known: OTLP spans (`streams.ingest.otlp.OtlpIngest`) and
    GenAI log records (`streams.ingest.otlp_logs.LogIngest`), which share one resolver."""

    resolver: AgentResolver
    unkeyed_messages: int
    partition_option: str  # the exporter's setting that keys this topic's messages by trace id

    def take(self, value: bytes | None, *, key: bytes | None, partition: int, offset: int, now: float,
             policy: Policy) -> list[Batch]: ...

    def release(self, now: float, policy: Policy) -> list[Batch]: ...

    def lowest_held(self, partition: int) -> int | None: ...

    def holds(self, partition: int, offset: int) -> bool: ...

    def forget_partitions(self, partitions: Iterable[int]) -> int: ...


@dataclass
class Reading:
    """What one worker gives its live inputs' readers: the settings they read and what they share."""

    max_bytes: int  # WARDEN_MAX_MESSAGE_BYTES
    encoding: Encoding  # WARDEN_OTLP_ENCODING
    wait_s: float  # WARDEN_OTLP_WAIT_S: how long a held event waits for its agent
    max_spans: int  # WARDEN_OTLP_MAX_SPANS
    policy: Callable[[], Policy]  # the live policy

    @cached_property
    def resolver(self) -> AgentResolver:
        """One per worker, shared by the span and log topics: a log record waits for the span naming its agent."""
        return AgentResolver(Bounds(wait_s=self.wait_s, max_spans=self.max_spans))


@dataclass(frozen=True)
class LiveInput:
    """One input topic the live worker consumes. Its topic is the setting `WARDEN_TOPIC_<NAME>` (NAME: its key in
    `INPUTS`), created with Warden's other topics and listed in the Helm chart's `topics.inputs`."""

    topic: str  # the default topic name
    about: str  # the setting's description
    replay: Callable[[Reading], Decoder]  # one message alone: rebuilding detector state (and the live path unless held)
    holding: Callable[[Reading], HoldingIngest] | None = None  # None: every message is judged alone, at once
