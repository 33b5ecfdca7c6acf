"""GenAI spans → native activity events: the OpenTelemetry GenAI and MCP semantic conventions (latest and older
names) and the OpenInference dialect, with secret access and identity changes classified by the tool catalogue.

A span that is not a GenAI operation (HTTP, database, framework glue) maps to no event; it still serves the agent
resolver as an ancestor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams.ingest.otlp_content import tool_arguments, tool_result, user_request
from streams.ingest.otlp_wire import STATUS_ERROR, Span
from warden.contract.events import ActivityEvent, Kind
from warden.policy.tools import ToolCatalogue

_TOOL_OPS = frozenset({"execute_tool"})
_AGENT_OPS = frozenset({"invoke_agent", "create_agent"})
_MODEL_OPS = frozenset({"chat", "text_completion", "generate_content"})
_RETRIEVAL_OPS = frozenset({"retrieval"})
_MEMORY_OPS = frozenset({"search_memory", "update_memory", "upsert_memory", "create_memory", "delete_memory",
                         "create_memory_store", "delete_memory_store"})
# OpenInference's span kinds (openinference.span.kind) that carry agent activity.
_OI_KINDS = {"TOOL": "execute_tool", "AGENT": "invoke_agent", "LLM": "chat", "RETRIEVER": "retrieval"}
_MAX_TEXT = 16_384  # model output text kept per event (redacted again on the way out)


def operation(span: Span) -> str | None:
    """The GenAI operation a span performs, in the GenAI conventions' words, or None for a span that is not one."""
    a = span.attributes
    op = a.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    mcp = a.get("mcp.method.name")
    if mcp == "tools/call":
        return "execute_tool"
    if mcp == "resources/read":
        return "mcp_resource_read"
    oi = a.get("openinference.span.kind")
    if isinstance(oi, str):
        return _OI_KINDS.get(oi.upper())
    return None


def is_activity(span: Span) -> bool:
    """Whether the span maps to an event (and so needs an agent)."""
    op = operation(span)
    return op is not None and (op in _TOOL_OPS or op in _AGENT_OPS or op in _MODEL_OPS or op in _RETRIEVAL_OPS
                               or op in _MEMORY_OPS or op == "mcp_resource_read")


def span_agent(span: Span) -> str | None:
    """The agent the span names itself (`gen_ai.agent.id`), if any."""
    return _text(span.attributes.get("gen_ai.agent.id"))


def resource_agent(span: Span) -> str | None:
    return _text(span.resource.get("gen_ai.agent.id"))


def service_name(span: Span) -> str | None:
    return _text(span.resource.get("service.name"))


def to_event(span: Span, agent_id: str, tools: ToolCatalogue, resolution: str) -> ActivityEvent | None:
    """The span as an event acted by `agent_id` (`resolution` says how that agent was found), or None when the span
    is no GenAI activity. Raises ValueError (pydantic's) when the span's values break the contract."""
    op = operation(span)
    if op is None:
        return None
    a = span.attributes
    fields: dict[str, Any] = {
        "event_id": f"otel:{span.trace_id}:{span.span_id}",
        "ts": datetime.fromtimestamp((span.start_ns or span.end_ns) / 1e9, UTC),
        "agent": {"id": agent_id, "name": _text(a.get("gen_ai.agent.name"))},
        "session_id": _first(a, "gen_ai.conversation.id", "mcp.session.id", "session.id"),
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "principal": _first(a, "enduser.id", "user.id"),
        "outcome": _outcome(span),
        "attributes": _extras(span, op, resolution),
    }
    if op in _TOOL_OPS:
        _tool(span, fields, tools)
    elif op in _RETRIEVAL_OPS:
        fields["kind"] = Kind.data_access
        fields["resource"] = {"type": "data_source",
                              "id": _first(a, "gen_ai.data_source.id", "db.namespace") or span.name or "unknown"}
    elif op in _MEMORY_OPS:
        fields["kind"] = Kind.data_access
        fields["resource"] = {"type": "memory", "id": _first(a, "gen_ai.memory.store.id", "gen_ai.memory.store.name",
                                                              "gen_ai.data_source.id") or "memory"}
    elif op == "mcp_resource_read":
        fields["kind"] = Kind.data_access
        fields["resource"] = {"type": "mcp_resource", "id": _text(a.get("mcp.resource.uri")) or span.name or "unknown"}
    elif op in _AGENT_OPS:
        fields["kind"] = Kind.agent_invoke
        request = user_request(a)
        if request is not None:
            fields["content"] = {"prompt": request}
    elif op in _MODEL_OPS:
        prompt = user_request(a)
        output = _content(a, "gen_ai.output.messages", "gen_ai.completion", "output.value")
        fields["kind"] = Kind.completion if output is not None else Kind.prompt
        if prompt is not None or output is not None:
            fields["content"] = {"prompt": prompt, "output": output}
    else:
        return None
    return ActivityEvent.model_validate(fields)


def _tool(span: Span, fields: dict[str, Any], tools: ToolCatalogue) -> None:
    """A tool call, or a data access when the tool is a datastore. Secret access and identity changes have no OTel
    operation: they stay tool calls, which the detectors classify through the tool catalogue (`secret_store`
    against the secret grant, `identity_admin` against the approval rule); the categories are noted here."""
    a = span.attributes
    name = _first(a, "gen_ai.tool.name", "tool.name") or _mcp_tool(span) or span.name or "unknown"
    arguments = tool_arguments(a)
    fields["tool"] = {"name": name, "call_id": _first(a, "gen_ai.tool.call.id", "tool_call.id"),
                      "arguments": arguments, "result": tool_result(a)}
    entry = tools.entry(name)
    if entry is not None and entry.categories:
        fields["attributes"]["warden.tool_categories"] = sorted(c.value for c in entry.categories)
    if _text(a.get("gen_ai.tool.type")) == "datastore":
        target = entry.argument(arguments) if entry is not None else None
        fields["kind"] = Kind.data_access
        fields["resource"] = {"type": "datastore",
                              "id": _first(a, "gen_ai.data_source.id") or _text(target) or name}
    else:
        fields["kind"] = Kind.tool_call


def _mcp_tool(span: Span) -> str | None:
    """MCP client/server spans are named `tools/call {tool}`."""
    method, _, rest = span.name.partition(" ")
    return rest.strip() or None if method == "tools/call" else None


def _outcome(span: Span) -> dict[str, Any] | None:
    if span.status_code == STATUS_ERROR:
        err = span.status_message or _text(span.attributes.get("error.type"))
        return {"status": "error", "error": err}
    return {"status": "ok"} if span.status_code == 1 else None


def _extras(span: Span, op: str, resolution: str) -> dict[str, Any]:
    a = span.attributes
    extras: dict[str, Any] = {"otel.operation": op, "otel.span_name": span.name, "warden.agent_resolution": resolution}
    provider = _first(a, "gen_ai.provider.name", "gen_ai.system", "llm.provider")
    if provider:
        extras["gen_ai.provider.name"] = provider
    for key in ("gen_ai.agent.version", "gen_ai.request.model", "gen_ai.tool.type", "mcp.method.name",
                "mcp.resource.uri", "gen_ai.data_source.id"):
        value = _text(a.get(key))
        if value:
            extras[key] = value
    service = service_name(span)
    if service:
        extras["service.name"] = service
    return extras


def _content(a: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = a.get(key)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return text[:_MAX_TEXT]
    return None


def _first(a: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = _text(a.get(key))
        if value:
            return value
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value)
    return text[:256] or None
