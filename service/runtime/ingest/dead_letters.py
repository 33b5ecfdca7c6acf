"""Dead letters of the batch ingest: the original bytes sealed whole, with the reason and source coordinates, bound
for the DLQ (and `Outgoing`, the record shape a batch produces, findings included)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.runtime.settings import Settings
from warden.contract.findings import Finding
from warden.contract.redact import redact_text
from warden.kit.sealing import SCHEME, Sealer


@dataclass
class Outgoing:
    """One record the batch produces: a finding (with what its metrics need) or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    finding: Finding | None = None
    reason_code: str | None = None  # a dead letter's


def sealed_dead_letter(sealer: Sealer, value: bytes | None, max_bytes: int) -> tuple[bytes | None, dict[str, bytes]]:
    """A dead letter's value and headers: the original bytes sealed whole (they may carry `credential.token` or any
    other secret, and a message that did not parse has no parts to pick out), cut first so that the sealed value
    fits in `max_bytes` (Fernet adds a third plus 73 bytes). `warden dlq replay` opens it again."""
    if value is None:
        return None, {}
    headers = {"warden.sealed": SCHEME}  # opened again by `warden dlq replay`
    room = (max_bytes * 3) // 4 - 128
    if len(value) > room:
        headers["warden.truncated_from"] = str(len(value)).encode()
        value = value[:room]
    return sealer.seal_bytes(value), headers


def dead_letter_record(settings: Settings, sealer: Sealer, *, topic: str, partition: int, offset: int,
                       key: bytes | None, value: bytes | None, reason_code: str, reason: str,
                       index: int | None = None) -> Outgoing:
    """The original bytes, sealed, with the reason and source coordinates as headers, bound for the DLQ."""
    sealed, headers = sealed_dead_letter(sealer, value, settings.dlq_max_bytes)
    headers.update({
        "warden.reason_code": reason_code.encode(),
        "warden.reason": redact_text(reason, 4096).encode("utf-8", "replace")[:4096],
        "warden.source_topic": topic.encode(),
        "warden.source_partition": str(partition).encode(),
        "warden.source_offset": str(offset).encode(),
    })
    if index is not None:
        headers["warden.batch_index"] = str(index).encode()
    return Outgoing(settings.topic_dlq, key, sealed, list(headers.items()), reason_code=reason_code)

