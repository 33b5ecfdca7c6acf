"""Structured logs: every record (Warden's and its libraries', through the standard logging module) becomes one JSON
object per line with time, level, logger, message and the incident and event ids it concerns, redacted last so that
no secret leaves in a log line whatever a caller passed. `text` keeps the human format for terminals."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from warden.contract.redact import redact_text

LOG_MAX_CHARS = 20_000
_INCIDENT = re.compile(r"\bincident #(\d+)")
_EVENT = re.compile(r"\bevent[_ ]id[=: ]+([\w.:-]+)")


def _ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Lift `incident #N` and `event_id=X` out of the message when the caller did not pass them as fields."""
    message = str(event.get("event", ""))
    if "incident_id" not in event and (m := _INCIDENT.search(message)):
        event["incident_id"] = int(m.group(1))
    if "event_id" not in event and (m := _EVENT.search(message)):
        event["event_id"] = m.group(1)
    return event


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if isinstance(value, str):
            event[key] = redact_text(value, LOG_MAX_CHARS)
    if key := event.pop("exception", None):
        event["exception"] = redact_text(str(key), LOG_MAX_CHARS)
    return event


def configure(level: int, fmt: str, stream: TextIO | None = None) -> None:
    """Route all logging through one handler on `stream` (stderr), JSON (`json`) or plain text (`text`)."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _ids,
                _redact,
                structlog.processors.EventRenamer("message"),
                structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
            ],
        ))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
