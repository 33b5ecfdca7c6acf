"""`warden run` whose ingest produces and delivers its batches but never commits them: killed (SIGKILL) while it
runs, it leaves what a crash between produce and commit leaves. Run as `python -m tests.uncommitting_worker run`."""

from __future__ import annotations

from aiokafka import TopicPartition

from service.cli import main
from service.runtime.ingest import BatchIngest


async def _skipped(self: BatchIngest, offsets: dict[TopicPartition, int]) -> None:
    """Every batch ends where the crash would come: delivered, not committed."""


BatchIngest._commit = _skipped  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
