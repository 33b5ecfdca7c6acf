"""What a GenAI span says was asked and what a tool returned, read role-aware, for provenance: the user's request
is only the user-role text of the input messages (system prompts, assistant turns and tool messages are not the
user's request), and a tool's result is kept as the agent saw it, as text or JSON.

The values are untrusted and may be hostile (huge, deeply nested, not JSON, a number): every reader here degrades
to text or to nothing and never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jiter

from warden.contract.events import MAX_RESULT_CHARS

MAX_REQUEST_CHARS = 16_384  # the user's request kept per event (redacted again on the way out)
# The GenAI conventions' input messages, their older name, then OpenInference's raw input: the first one present
# decides (a list of messages that holds no user text is no request, not a reason to read the next one).
_REQUEST_KEYS = ("gen_ai.input.messages", "gen_ai.prompt")
_OI_INPUT_VALUE = "input.value"
_OI_MESSAGE = re.compile(
    r"llm\.input_messages\.(\d+)\.message\.(role|content|contents\.(\d+)\.message_content\.(type|text))")
_RESULT_KEYS = ("gen_ai.tool.call.result", "output.value")  # GenAI, then OpenInference's TOOL span output
_ARGUMENT_KEYS = ("gen_ai.tool.call.arguments", "input.value", "tool.parameters")
_NOT_JSON = object()


def tool_result(a: Mapping[str, Any]) -> str | dict[str, Any] | list[Any] | None:
    """`gen_ai.tool.call.result` (OpenInference: `output.value`): structured (kvlist, array) as sent, JSON text that
    is an object or array as that JSON, anything else as text. The contract caps it and marks the cut."""
    for key in _RESULT_KEYS:
        value = a.get(key)
        if value is None:
            continue
        if isinstance(value, dict | list):
            return value
        if isinstance(value, str):
            parsed = parse_json(value) if len(value) <= MAX_RESULT_CHARS else _NOT_JSON  # longer: cut as text
            return parsed if isinstance(parsed, dict | list) else value
        return _scalar_text(value)
    return None


def tool_arguments(a: Mapping[str, Any]) -> dict[str, Any] | None:
    """`gen_ai.tool.call.arguments` as an object (kvlist), or a JSON string of one; OpenInference's `input.value` (the
    arguments of a TOOL span), then `tool.parameters` likewise. Anything else is kept under `value`, so nothing the
    agent sent is lost."""
    raw = next((a[k] for k in _ARGUMENT_KEYS if a.get(k) is not None), None)
    if raw is None:
        return None
    if isinstance(raw, str):
        parsed = parse_json(raw)
        return parsed if isinstance(parsed, dict) else {"value": raw if parsed is _NOT_JSON else parsed}
    return raw if isinstance(raw, dict) else {"value": raw}


def user_request(a: Mapping[str, Any]) -> str | None:
    """The user-role text of the span's input messages, joined by blank lines and capped; for input that names no
    roles (a plain prompt string, OpenInference `input.value` text) the input itself, since no role says otherwise."""
    for key in _REQUEST_KEYS:
        if a.get(key) is not None:
            return _request_of(a[key])
    flattened = _openinference_messages(a)
    if flattened is not None:
        return _join(_user_texts(flattened))
    if a.get(_OI_INPUT_VALUE) is not None:
        return _request_of(a[_OI_INPUT_VALUE])
    return None


def parse_json(text: str) -> Any:
    """Strict JSON (jiter: at most 200 levels, no duplicate keys, no NaN), or `_NOT_JSON` for anything else."""
    try:
        return jiter.from_json(text.encode("utf-8"), allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys")
    except (ValueError, UnicodeEncodeError):
        return _NOT_JSON


def _request_of(value: Any) -> str | None:
    if isinstance(value, str):
        parsed = parse_json(value)
        if parsed is _NOT_JSON:
            return value[:MAX_REQUEST_CHARS] or None
        value = parsed
    messages = _messages(value)
    if messages is not None:
        return _join(_user_texts(messages))
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:MAX_REQUEST_CHARS] or None


def _messages(value: Any) -> list[Any] | None:
    """A role-tagged message list: the GenAI `[{role, parts}]`, a chat API's `[{role, content}]`, or a request body
    holding one under `messages` (OpenInference `input.value` of an LLM span). None when no element names a role."""
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]
    if isinstance(value, list) and any(isinstance(m, dict) and "role" in m for m in value):
        return value
    return None


def _user_texts(messages: Iterable[Any]) -> list[str]:
    texts: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or str(message.get("role", "")).lower() != "user":
            continue
        for key in ("parts", "content", "contents"):
            texts.extend(_texts(message.get(key)))
    return texts


def _texts(content: Any) -> list[str]:
    """Text parts only: `{"type": "text", "content"|"text": ...}` or plain strings (tool responses, blobs, files and
    tool calls inside a user turn are not the user's words)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    out: list[str] = []
    for part in content:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            text = part.get("content", part.get("text"))
            if isinstance(text, str):
                out.append(text)
    return out


def _openinference_messages(a: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """OpenInference's flattened `llm.input_messages.<i>.message.{role, content, contents.<j>.message_content.*}`
    back into `[{role, content, contents}]`, in index order; None when the span has none."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in a.items():
        if not key.startswith("llm.input_messages."):
            continue
        m = _OI_MESSAGE.fullmatch(key)
        if m is None:
            continue
        message = found.setdefault(int(m.group(1)), {"contents": {}})
        if m.group(3) is None:
            message[m.group(2)] = value
        else:
            message["contents"].setdefault(int(m.group(3)), {})[m.group(4)] = value
    if not found:
        return None
    return [{**msg, "contents": [msg["contents"][j] for j in sorted(msg["contents"])]}
            for _, msg in sorted(found.items())]


def _join(texts: list[str]) -> str | None:
    text = "\n\n".join(t for t in texts if t)
    return text[:MAX_REQUEST_CHARS] or None


def _scalar_text(value: Any) -> str:
    """A number or boolean result as its JSON text (`42`, `true`, `NaN`), bytes already being base64 text."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
