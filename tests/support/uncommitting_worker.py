"""A worker (`warden run`'s runtime) whose ingest produces and delivers its batches but never commits them: killed
(SIGKILL) while it runs, it leaves what a crash between produce and commit leaves. Run as
`python -m tests.support.uncommitting_worker`."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiokafka import AIOKafkaConsumer, TopicPartition

from service.runtime.ingest.checkpoint import Checkpoint
from service.runtime.logs import configure
from service.runtime.settings import Settings
from service.runtime.worker import Runtime


class NeverCommits(Checkpoint):
    """Every batch ends where the crash would come: delivered, not committed."""

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
        return False


async def run() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Runtime(Settings(), checkpoint=NeverCommits()):
        await stop.wait()


if __name__ == "__main__":
    configure(logging.WARNING, "text")
    asyncio.run(run())
