"""The native activity event contract (schema v1): what producers put on `warden.activity`."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

SCHEMA_VERSION = 1


class Kind(StrEnum):
    """What the agent did."""

    tool_call = "tool_call"
    secret_access = "secret_access"
    data_access = "data_access"
    identity_change = "identity_change"
    approval = "approval"
    prompt = "prompt"
    completion = "completion"
    agent_invoke = "agent_invoke"
    # What a tool returned, as the agent saw it, reported apart from the call (the OTLP logs signal's tool messages):
    # provenance reads its `tool.result`; the call itself is judged on its own `tool_call` event.
    tool_result = "tool_result"
    # Another evaluator's verdict on the agent's work (`gen_ai.evaluation.result`): name, score and label are in
    # `attributes`, for custom rules.
    evaluation = "evaluation"


def _not_a_number(value: object) -> object:
    """RFC 3339 text only: a bare number is ambiguous (seconds? milliseconds?) so it is rejected."""
    if isinstance(value, int | float):
        raise ValueError("ts must be an RFC 3339 string such as 2026-11-21T10:00:00Z, not a number")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Agent(_Part):
    """The acting agent; `id` is the Kafka key and the matrix lookup key."""

    id: str = Field(min_length=1, max_length=256, description="Stable agent id, as listed in the matrix.")
    name: str | None = Field(None, description="Human-readable agent name.")


MAX_RESULT_CHARS = 16_384  # a tool result longer than this (as text) is cut, and `result_truncated` says so


def _compact(value: object) -> bytes:
    """A JSON result's compact UTF-8 form (orjson: a tenth of json.dumps's cost on a 4 KB result)."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:  # an integer beyond 64 bits, a non-string key
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _capped(value: object) -> tuple[object, bool]:
    """A result is text or JSON as the agent saw it; past MAX_RESULT_CHARS characters (JSON: bytes of its compact
    form) it is kept as its first characters, JSON as its compact text, and marked truncated: one huge page costs the
    hot path a bounded amount."""
    if isinstance(value, str):
        return (value[:MAX_RESULT_CHARS], True) if len(value) > MAX_RESULT_CHARS else (value, False)
    text = _compact(value)
    if len(text) <= MAX_RESULT_CHARS:
        return value, False
    return text.decode()[:MAX_RESULT_CHARS], True


class Tool(_Part):
    """The tool the agent called."""

    name: str = Field(min_length=1, max_length=256, description="Tool name, as the matrix scopes it.")
    call_id: str | None = Field(None, description="The tool call id from the model or gateway.")
    arguments: dict[str, Any] | None = Field(None, description="Tool arguments (untrusted; redacted on output).")
    result: str | dict[str, Any] | list[Any] | None = Field(
        None, description="The tool's output as the agent saw it, text or JSON (untrusted; never shown unredacted). "
        f"Past {MAX_RESULT_CHARS} characters (JSON: bytes of its compact form) it is cut, JSON to its compact text, "
        "and `result_truncated` is true.")
    result_truncated: bool = Field(False, description="True when Warden (or the producer) cut `result`.")

    @model_validator(mode="before")
    @classmethod
    def _cap(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("result") is not None:
            result, cut = _capped(data["result"])
            if cut:
                data = {**data, "result": result, "result_truncated": True}
        return data


class Resource(_Part):
    """A data set, document, repository or secret that was touched."""

    type: str = Field(min_length=1, description="Resource type: `secret`, `dataset`, `repository`, `document`, ...")
    id: str = Field(min_length=1, description="Resource id or URI, matched against the matrix's globs.")
    classification: str | None = Field(
        None, description="Data classification: public, internal, confidential or restricted."
    )


class Credential(_Part):
    """The credential the agent used. `token` is secret and never leaves Warden in clear."""

    id: str | None = Field(None, description="Credential id (not secret): key id, client id, token id.")
    issuer: str | None = Field(None, description="Who issued it (OAuth issuer URL, vault, cloud IAM).")
    token: SecretStr | None = Field(None, description="The token itself. Only used for revocation; always redacted.")


class IdentityChange(_Part):
    """An identity or access change the agent made or requested."""

    operation: str = Field(min_length=1, description="Operation: grant_role, create_key, reset_mfa, ...")
    target: str = Field(min_length=1, description="The identity changed (user, service account, group).")
    entitlement: str | None = Field(None, description="The role, group or permission granted or removed.")


class Decision(StrEnum):
    approved = "approved"
    rejected = "rejected"


class Approval(_Part):
    """A human decision on a pending change."""

    approver: str = Field(min_length=1, description="Owner id of the human who decided (as in the matrix).")
    decision: Decision = Field(description="approved or rejected.")
    ref: str | None = Field(None, description="What was decided on: the event_id or change id it approves.")


class Outcome(_Part):
    status: str = Field(min_length=1, description="ok, error, denied, timeout ...")
    error: str | None = Field(None, description="Error text (untrusted).")


class Content(_Part):
    prompt: str | None = Field(None, description="Prompt text (untrusted; redacted before it leaves Warden).")
    output: str | None = Field(None, description="Model output (untrusted; redacted before it leaves Warden).")


_REQUIRED_PART = {
    Kind.tool_call: "tool",
    Kind.tool_result: "tool",
    Kind.secret_access: "resource",
    Kind.data_access: "resource",
    Kind.identity_change: "identity_change",
    Kind.approval: "approval",
}


class ActivityEvent(BaseModel):
    """One thing an LLM agent did. Unknown top-level fields are kept in `attributes`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: str = Field(min_length=1, max_length=256, description="Unique id; the dedup key.")
    ts: Timestamp = Field(description="When it happened, RFC 3339 with an offset.")
    kind: Kind
    agent: Agent
    schema_version: int = Field(SCHEMA_VERSION, description="Contract version; 1.")
    workflow: str | None = Field(None, description="Workflow id; derived from the matrix by agent id when absent.")
    session_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    principal: str | None = Field(None, description="The human or service the agent acts for.")
    tool: Tool | None = None
    resource: Resource | None = None
    credential: Credential | None = None
    identity_change: IdentityChange | None = None
    approval: Approval | None = None
    outcome: Outcome | None = None
    content: Content | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, description="Extra fields, kept as sent.")

    @model_validator(mode="after")
    def _check_kind_and_keep_extras(self) -> ActivityEvent:
        part = _REQUIRED_PART.get(self.kind)
        if part is not None and getattr(self, part) is None:
            raise ValueError(f"kind {self.kind.value!r} requires the {part!r} field")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})")
        extra = self.__pydantic_extra__
        if extra:
            merged = {**extra, **self.attributes}
            object.__setattr__(self, "attributes", merged)
            object.__setattr__(self, "__pydantic_extra__", {})
        return self
