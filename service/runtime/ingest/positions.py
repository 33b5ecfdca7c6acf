"""Per input partition, how far the loop has taken messages and what it committed last: what the next commit moves,
capped below any event a holding input still holds."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import TopicPartition

from service.runtime.inputs import InputHandler


class Positions:
    """The ingest's offsets between two commits; cleared when the assignment changes or a batch starts over."""

    def __init__(self, inputs: Mapping[str, InputHandler]) -> None:
        self._inputs = inputs
        self._taken: dict[TopicPartition, int] = {}  # per partition, the offset after the last message taken
        self._committed: dict[TopicPartition, int] = {}  # per partition, what this worker committed last

    def taken(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Messages up to (below) these offsets are judged."""
        self._taken.update(offsets)

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The group took these offsets."""
        self._committed.update(offsets)

    def to_commit(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last message taken, capped at its lowest held offset (a held event
        is never committed past: a crash delivers its message again); only those that moved since the last commit."""
        moved: dict[TopicPartition, int] = {}
        for tp, taken in self._taken.items():
            held = self._inputs[tp.topic].lowest_held(tp.partition)
            position = taken if held is None else min(taken, held)
            if position > self._committed.get(tp, -1):
                moved[tp] = position
        return moved

    def clear(self) -> None:
        """Forget every partition: what comes next is read from the committed offsets."""
        self._taken.clear()
        self._committed.clear()
