"""The reference client of approval before action (docs/approvals.md): hold an action until Warden answers.

`HttpApprovals` talks to a worker's `/v1/approvals` with a gateway token; `KafkaApprovals` puts the request on
`warden.approval.requests` and reads `warden.approval.decisions`. Both return Warden's `ApprovalAnswer`; act only
when `proceed(answer)` is true. Everything else (denied, expired, still pending when you stop waiting, an error)
means: do not act. That is the whole contract a gateway must keep: fail closed."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from warden.contract.approval_requests import FINAL, MAX_WAIT_S, PROCEED, ApprovalAnswer, ApprovalRequest

METADATA_WAIT_S = 30.0  # how long KafkaApprovals waits for the decisions topic's partitions at start


class ApprovalError(RuntimeError):
    """Warden refused the request (401, 409, 422) or could not be reached: the action must not go ahead."""


def proceed(answer: ApprovalAnswer | None) -> bool:
    """True only for `allowed` and `approved`: the one test a gateway makes before acting."""
    return answer is not None and answer.status in PROCEED


def with_id(request: ApprovalRequest) -> ApprovalRequest:
    """The request with a request id of its own, so that a retry is answered rather than recorded twice."""
    return request if request.request_id else request.model_copy(update={"request_id": uuid.uuid4().hex})


class HttpApprovals:
    """`async with HttpApprovals(url, token) as warden: answer = await warden.hold(request, timeout_s=900)`."""

    def __init__(self, base_url: str, token: str, *, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session = session
        self._own = session is None

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None

    async def ask(self, request: ApprovalRequest) -> ApprovalAnswer:
        """Submit (idempotent on the request id) and return the answer as it stands: final, or pending."""
        assert self._session is not None, "use `async with`"
        body = request.model_dump_json(exclude_none=True)
        async with self._session.post(f"{self.base_url}/v1/approvals", data=body, headers={
                **self._headers, "Content-Type": "application/json"}) as r:
            return await _read(r)

    async def answer(self, request_id: str, wait_s: float = 0.0) -> ApprovalAnswer:
        """The answer, long-polling up to `wait_s` (at most the server's bound) for a final one."""
        assert self._session is not None, "use `async with`"
        async with self._session.get(f"{self.base_url}/v1/approvals/{request_id}", headers=self._headers,
                                     params={"wait": f"{min(max(wait_s, 0.0), MAX_WAIT_S):g}"}) as r:
            return await _read(r)

    async def hold(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalAnswer:
        """Ask, then long-poll until the answer is final or `timeout_s` passed (then it is still pending: do not
        act; ask again later with the same request id, or give up)."""
        answer = await self.ask(with_id(request))
        deadline = time.monotonic() + timeout_s
        while answer.status not in FINAL and (left := deadline - time.monotonic()) > 0:
            answer = await self.answer(answer.request_id, min(left, MAX_WAIT_S))
        return answer


async def _read(response: aiohttp.ClientResponse) -> ApprovalAnswer:
    if response.status not in (200, 202):
        raise ApprovalError(f"Warden answered {response.status}: {(await response.text())[:500]}")
    return ApprovalAnswer.model_validate_json(await response.read())


class KafkaApprovals:
    """For event-driven gateways: `async with KafkaApprovals(bootstrap) as warden: await warden.hold(...)`.

    It reads every partition of the decisions topic from its end at start (no consumer group), so it sees the
    answers to the requests it sends afterwards."""

    def __init__(self, bootstrap: str, *, requests_topic: str = "warden.approval.requests",
                 decisions_topic: str = "warden.approval.decisions", **kafka_options: Any) -> None:
        """`kafka_options`: aiokafka's connection keywords for a secured cluster (security_protocol, ssl_context,
        sasl_mechanism, sasl_plain_username, sasl_plain_password, sasl_oauth_token_provider), given to both clients."""
        self.bootstrap, self.requests_topic, self.decisions_topic = bootstrap, requests_topic, decisions_topic
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **kafka_options)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                          **kafka_options)
        self._latest: dict[str, ApprovalAnswer] = {}
        self._arrived = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self._producer.start()
        await self._consumer.start()
        try:  # the producer's metadata request names the topic, so Kafka answers with its partitions
            partitions = await asyncio.wait_for(self._producer.partitions_for(self.decisions_topic),
                                                METADATA_WAIT_S)
        except (TimeoutError, KafkaError) as exc:
            await self.__aexit__(None, None, None)
            raise ApprovalError(f"cannot read the partitions of {self.decisions_topic}: {exc!r}") from None
        self._consumer.assign([TopicPartition(self.decisions_topic, p) for p in partitions])
        await self._consumer.seek_to_end()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            async with self._arrived:
                for records in batch.values():
                    for record in records:
                        try:
                            answer = ApprovalAnswer.model_validate_json(record.value or b"")
                        except ValueError:
                            continue
                        self._latest[answer.request_id] = answer
                self._arrived.notify_all()

    async def hold(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalAnswer | None:
        """Send the request and wait up to `timeout_s` for a final answer; the latest answer (pending) or None
        when none came in time. Only `proceed(answer)` lets the action go ahead."""
        request = with_id(request)
        rid = request.request_id or ""
        await self._producer.send_and_wait(self.requests_topic, key=request.agent.id.encode(),
                                           value=request.model_dump_json(exclude_none=True).encode())

        def final() -> bool:
            latest = self._latest.get(rid)
            return latest is not None and latest.status in FINAL

        async with self._arrived:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait_for(final), timeout_s)
        return self._latest.get(rid)
