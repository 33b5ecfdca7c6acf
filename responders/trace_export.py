"""Warden's verdicts back into the agent's own traces (experimental): each finding recorded on an incident and each
containment step's outcome, as an OTLP log event carrying the trace and span id of the agent's activity that raised
it, posted as OTLP/HTTP protobuf to an endpoint (the user's Collector), so the tracing backend where the agent's
traces are read shows Warden's verdict on them.

The GenAI conventions have no settled shape for a security verdict yet. A finding is a `gen_ai.evaluation.result`
event (Development status): `gen_ai.evaluation.name` `warden.<rule>`, the severity as `score.label` and as
`score.value` (0.25 low … 1.0 critical), the rule's title as `explanation`. Where the open guardrail proposal
(semantic-conventions-genai#427, `gen_ai.security.*`) names a field, it is set too: `gen_ai.security.policy.rule.id`
(the rule) and `gen_ai.security.external_finding_id` (the finding id, the key of Warden's incident API and OCSF export)
on every record, and `gen_ai.security.action.type` (the action) on a containment step, kept apart from the verdict as
that proposal asks. A containment step is a `warden.containment.step` event. These names will follow the conventions
as they settle; docs/otel.md says so.

Where the trace comes from: the finding's event id, which the OTLP ingest builds from the trace and span
(`otel:<trace id>:<span id>`, or `otel:<trace id>:…` for an event from the logs signal, which names the trace only).
A finding of a native event has no trace here and is not exported; a containment step takes the trace of its
incident's latest finding.

Nothing secret and no agent text goes out: no evidence, no target (a tool name is the agent's text), no step detail;
only rule ids, severities, Warden's own titles, ids and the timeline hash that links the record to the audit chain.
The scope is `warden.verdicts`: Warden's log ingest skips it, so a Collector that also feeds Warden never loops the
verdicts back. At least once, through the timeline cursor of `audit_export` (its own cursor row): the cursor moves
only after the endpoint answered 2xx.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime

import aiohttp
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from responders.audit_export import TimelineCursor
from responders.db.models import FindingRecord, Incident, TimelineEntry

log = logging.getLogger("warden.trace_export")

TRACE_CURSOR = 2  # the audit_export row of this export (1 is the warden.audit topic's)
SCOPE = "warden.verdicts"  # streams/ingest/otlp_logs.py VERDICT_SCOPE: never read back in
FINDING_EVENT = "gen_ai.evaluation.result"
STEP_EVENT = "warden.containment.step"
_FINDING_KINDS = frozenset({"opened", "grouped"})
_STEP_PREFIX = "containment_step_"
_SCORE = {"low": 0.25, "medium": 0.5, "high": 0.75, "critical": 1.0}
_SEVERITY_NUMBER = {"low": 9, "medium": 13, "high": 17, "critical": 21}  # INFO, WARN, ERROR, FATAL
_OTEL_ID = re.compile(r"otel:([0-9a-f]{32})(?::([0-9a-f]{16}))?(?::|$)")


def trace_of(event_id: str) -> tuple[bytes, bytes] | None:
    """The trace id and span id (b"" when only the trace is known) an OTLP-ingested event id names."""
    m = _OTEL_ID.match(event_id)
    if m is None:
        return None
    return bytes.fromhex(m.group(1)), bytes.fromhex(m.group(2)) if m.group(2) else b""


def logs_url(endpoint: str) -> str:
    """The OTLP/HTTP logs path of a Collector's base URL (an endpoint already ending in /v1/logs is kept)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/logs") else f"{base}/v1/logs"


class TraceExporter:
    """One batch of the timeline per `export()`: findings and containment steps → one OTLP logs request."""

    def __init__(self, engine: AsyncEngine, endpoint: str, clock: Callable[[], datetime], *, service: str,
                 version: str, timeout_s: float = 10.0, batch: int = 500, settle_s: float = 10.0) -> None:
        self.cursor = TimelineCursor(engine, clock, TRACE_CURSOR, batch=batch, settle_s=settle_s)
        self.url = logs_url(endpoint)
        self.clock = clock
        self.service, self.version = service, version
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None
        self.exported = 0  # log records accepted by the endpoint since start (tests, diagnostics)

    async def export(self) -> int:
        """How many timeline entries this batch covered (0: nothing new). Raises when the endpoint refused it: the
        cursor stays, and the polling loop tries again."""
        return await self.cursor.export(self._send)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _send(self, s: AsyncSession, entries: list[TimelineEntry]) -> None:
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.extend([_kv("service.name", self.service),
                                                  _kv("service.version", self.version)])
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name, scope_logs.scope.version = SCOPE, self.version
        for entry in entries:
            record = await self._record(s, entry)
            if record is not None:
                scope_logs.log_records.append(record)
        if not scope_logs.log_records:
            return
        await self._post(request)
        self.exported += len(scope_logs.log_records)

    async def _record(self, s: AsyncSession, entry: TimelineEntry) -> LogRecord | None:
        if entry.kind in _FINDING_KINDS:
            finding_id = entry.detail.get("finding_id")
            found = await s.get(FindingRecord, finding_id) if isinstance(finding_id, str) else None
        elif entry.kind.startswith(_STEP_PREFIX):
            found = (await s.execute(select(FindingRecord).where(FindingRecord.incident_id == entry.incident_id)
                                     .order_by(FindingRecord.recorded_at.desc()).limit(1))).scalar_one_or_none()
        else:
            return None
        ids = trace_of(found.event_id) if found is not None else None
        incident = await s.get(Incident, entry.incident_id)
        if found is None or ids is None or incident is None:
            return None  # nothing to attach it to: a native event carries no trace here
        record = LogRecord(time_unix_nano=_ns(entry.at), observed_time_unix_nano=_ns(self.clock()),
                           trace_id=ids[0], span_id=ids[1])
        attrs = [_kv("gen_ai.security.policy.rule.id", found.rule),
                 _kv("gen_ai.security.external_finding_id", found.finding_id),
                 _kv("gen_ai.agent.id", found.agent_id), _kv("warden.incident.id", entry.incident_id),
                 _kv("warden.timeline.kind", entry.kind), _kv("warden.timeline.hash", entry.hash)]
        if incident.workflow:
            attrs.append(_kv("warden.workflow", incident.workflow))
        if entry.kind in _FINDING_KINDS:
            record.event_name = FINDING_EVENT
            record.severity_number = _SEVERITY_NUMBER.get(found.severity, 0)  # type: ignore[assignment]  # proto enum
            record.severity_text = found.severity.upper()
            attrs += [_kv("gen_ai.evaluation.name", f"warden.{found.rule}"),
                      _kv("gen_ai.evaluation.score.label", found.severity),
                      _kv("gen_ai.evaluation.score.value", _SCORE.get(found.severity, 0.0)),
                      _kv("gen_ai.evaluation.explanation", incident.title)]
        else:
            record.event_name = STEP_EVENT
            detail = entry.detail
            attrs += [_kv("gen_ai.security.action.type", str(detail.get("action", ""))),
                      _kv("warden.containment.status", entry.kind.removeprefix(_STEP_PREFIX)),
                      _kv("warden.containment.playbook", str(detail.get("playbook", ""))),
                      _kv("warden.containment.step", int(detail.get("step", 0) or 0))]
        record.attributes.extend(attrs)
        return record

    async def _post(self, request: ExportLogsServiceRequest) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self.timeout)
        async with self._http.post(self.url, data=request.SerializeToString(),
                                   headers={"Content-Type": "application/x-protobuf"}) as response:
            body = await response.read()
            if response.status // 100 != 2:
                raise RuntimeError(f"the OTLP endpoint {self.url} answered {response.status}")
        answer = ExportLogsServiceResponse()
        answer.ParseFromString(body)
        if answer.partial_success.rejected_log_records:
            log.warning("the OTLP endpoint %s rejected %d of Warden's verdict records: %s", self.url,
                        answer.partial_success.rejected_log_records, answer.partial_success.error_message[:200])


def _kv(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return KeyValue(key=key, value=AnyValue(string_value=str(value)))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)
