"""Create Warden's topics up front (aiokafka admin), and fail with one clear line when Kafka is unreachable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from service.runtime.kafka_access import KafkaAccess, access, connect_reasons, explain
from service.runtime.settings import Settings
from streams.ingest import ACTIVITY

log = logging.getLogger("warden")

# A dead letter carries up to dlq_max_bytes of the original plus Warden's headers (the reason is cut at 4 KiB).
DLQ_HEADER_ROOM = 64 * 1024
CONFIG_READ_ATTEMPTS = 5  # a topic created a moment ago can be unknown to DescribeConfigs for a short while


class BrokerUnreachable(RuntimeError):
    """No Kafka broker answered at the configured address."""


class TopicCreationFailed(BrokerUnreachable):
    """The broker answered but refused to create a topic Warden needs (replication factor, a config, an ACL...).
    A BrokerUnreachable, so the CLI reports it the same way: one line naming the reason, and exit 2."""


def topic_names(settings: Settings) -> list[str]:
    """Every topic Warden reads or writes, in the order they are created (and logged): the activity topic, Warden's
    own, then the other live inputs of the registry."""
    inputs = settings.input_topics()
    activity = inputs.pop(ACTIVITY)
    return [activity, settings.topic_findings, settings.topic_dlq, settings.topic_control,
            settings.topic_revocations, settings.topic_approval_requests, settings.topic_approval_decisions,
            settings.topic_approval_dlq, *inputs.values()]


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic configs Warden needs beyond a broker's defaults.

    Apache Kafka refuses a record batch over `max.message.bytes` (1 MiB by default; Tansu has no limit). Warden
    dead-letters an oversized input message with up to dlq_max_bytes of its bytes, so every live input topic must
    accept such a message in the first place, and the DLQ must accept the dead letter; otherwise
    the DLQ write is refused, retried forever, and its partition stalls. The control and revocation topics are
    compacted: gateways read them from the start, and only each agent's or credential's latest record matters."""
    limit = {"max.message.bytes": str(settings.dlq_max_bytes + DLQ_HEADER_ROOM)}
    compacted = {"cleanup.policy": "compact"}  # the latest record per key is the state: agent or credential
    return {**{topic: dict(limit) for topic in settings.input_topics().values()}, settings.topic_dlq: dict(limit),
            settings.topic_control: dict(compacted), settings.topic_revocations: dict(compacted)}


async def ensure_topics(
    kafka: KafkaAccess | str,
    names: list[str],
    partitions: int,
    timeout: float = 15.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create any missing topic (with its `configs`) and return the ones created.

    Raises BrokerUnreachable naming the address and why (a refused password, an untrusted certificate: the first
    connection Warden makes, so a wrong credential stops start-up in seconds), and TopicCreationFailed with the
    broker's reason."""
    kafka = access(kafka)
    bootstrap = kafka.bootstrap
    admin = kafka.admin(request_timeout_ms=int(timeout * 1000))
    with connect_reasons() as reasons:  # the one-line BrokerUnreachable below says it all
        try:
            await asyncio.wait_for(admin.start(), timeout)
        except (TimeoutError, KafkaConnectionError, KafkaError, OSError) as exc:
            await admin.close()
            why = explain(reasons) or str(exc) or type(exc).__name__
            raise BrokerUnreachable(f"WARDEN_KAFKA_BOOTSTRAP: cannot reach Kafka at {bootstrap} "
                                    f"(WARDEN_KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}): {why}") from None
    configs = configs or {}
    try:
        existing = set(await admin.list_topics())
        await _warn_if_too_small(admin, [n for n in names if n in existing], configs)
        missing = [
            NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=dict(configs.get(n, {})))
            for n in names
            if n not in existing
        ]
        if not missing:
            return []
        # aiokafka returns the broker's per-topic errors instead of raising them: read them, or a topic that
        # was never created is reported as created.
        response = await admin.create_topics(missing)
        created: list[str] = []
        existed: list[str] = []
        for topic, code, message, *_ in response.topic_errors:
            error = for_code(code) if code else None
            if error is None:
                created.append(topic)
            elif error is TopicAlreadyExistsError:  # another worker created it meanwhile, or the metadata
                existed.append(topic)  # we listed was older than the topic: its limit is someone else's too
            else:
                raise TopicCreationFailed(f"Kafka at {bootstrap} refused to create topic {topic}: "
                                          f"{error.__name__}: {message or ''}".rstrip(": "))
        await _warn_if_too_small(admin, existed, configs)
        return [t.name for t in missing if t.name in created]
    finally:
        await admin.close()


async def _warn_if_too_small(admin: AIOKafkaAdminClient, names: list[str], configs: Mapping[str, Mapping[str, str]]
                             ) -> None:
    """A topic created by someone else keeps its own limit: say so when it is below what Warden writes to it."""
    needed = {n: int(configs[n]["max.message.bytes"]) for n in names if "max.message.bytes" in configs.get(n, {})}
    if not needed:
        return
    pending = dict(needed)
    for attempt in range(CONFIG_READ_ATTEMPTS):
        try:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n, None) for n in pending]  # all: Tansu drops a filtered one
            )
        except KafkaError as exc:  # an ACL may forbid DescribeConfigs; creating and consuming still work
            log.info("cannot read topic configs (%s): not checking max.message.bytes", type(exc).__name__)
            return
        for response in responses:
            for code, _message, _type, topic, entries in response.resources:
                if code or topic not in pending:
                    continue  # a topic created a moment ago may not be known to the broker answering yet
                limit = pending.pop(topic)
                for name, value, *_ in entries:
                    if name == "max.message.bytes" and int(value) < limit:
                        log.warning("topic %s accepts messages up to %s bytes (max.message.bytes); Warden writes up "
                                    "to %d there (oversized activity, dead letters): raise it, or lower "
                                    "WARDEN_DLQ_MAX_BYTES", topic, value, limit)
        if not pending:
            return
        await asyncio.sleep(0.2 * (attempt + 1))
    log.info("could not read the configs of %s: not checking max.message.bytes there", ", ".join(sorted(pending)))
