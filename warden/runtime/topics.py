"""Create Warden's topics up front (aiokafka admin), and fail with one clear line when Kafka is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from warden.runtime.settings import Settings


class BrokerUnreachable(RuntimeError):
    """No Kafka broker answered at the configured address."""


def topic_names(settings: Settings) -> list[str]:
    return [settings.topic_activity, settings.topic_findings, settings.topic_dlq]


async def ensure_topics(bootstrap: str, names: list[str], partitions: int, timeout: float = 15.0) -> list[str]:
    """Create any missing topic and return the ones created. Raises BrokerUnreachable naming the address."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # the one-line BrokerUnreachable below says it all
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (TimeoutError, KafkaConnectionError, KafkaError, OSError) as exc:
        await admin.close()
        raise BrokerUnreachable(f"cannot reach Kafka at {bootstrap}: {exc or type(exc).__name__}") from None
    finally:
        client_log.setLevel(level)
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker created it meanwhile
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()
