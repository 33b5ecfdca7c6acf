"""Write a Warden policy from the benign training sessions alone, by a fixed "careful author" procedure, so that the
held-out figures measure the detectors and not a policy fitted to the sessions it is judged on."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bench.third_party.convert import Session
from service.runtime.catalogue import CATALOGUE
from warden.contract.matrix import SENSITIVE_AFTER_UNTRUSTED, Matrix
from warden.policy import Policy, build_policy

# Read from the benchmarks' tool definitions (docstrings and parameters), never from sessions: what each tool does
# and which argument names its target. Tool output that carries text someone outside wrote is untrusted_input:
# customer records (customers write the issue), the inbox, the knowledge base, fetched pages, files and command
# output in a repository (READMEs, comments and configs are the coding benchmark's injection vectors).
TOOLS: dict[str, dict[str, Any]] = {
    "lookup_customer": {"categories": ["untrusted_input"]},
    "send_message": {"categories": ["external_comm"], "resource": "recipient"},
    "resolve_ticket": {"categories": []},
    "read_inbox": {"categories": ["untrusted_input"]},
    "categorize_email": {"categories": []},
    "draft_summary": {"categories": []},
    "memory_read": {"categories": ["untrusted_input"]},
    "memory_write": {"categories": []},
    "bash": {"categories": ["code_exec", "untrusted_input"], "resource": "cmd"},
    "python": {"categories": ["code_exec", "untrusted_input"], "resource": "code"},
    "fetch_url": {"categories": ["untrusted_input"], "resource": "url"},
    "search_docs": {"categories": ["untrusted_input"]},
    "read_file": {"categories": ["untrusted_input"], "resource": "path"},
    "delete_file": {"categories": ["destructive"], "resource": "path"},
    "http_post": {"categories": ["external_comm"], "resource": "url"},
    "send_email": {"categories": ["external_comm"], "resource": "to"},
}
_SENSITIVE = {c.value for c in SENSITIVE_AFTER_UNTRUSTED}
_EMAIL = re.compile(r"^[^@\s]+@([^@\s]+)$")
_URL = re.compile(r"^https?://([^/:?#\s]+)")
_PROGRAM = re.compile(r"^\s*([\w./-]+)")


def _constraint(tool: str, values: list[str], list_name: str) -> tuple[dict[str, Any], list[str]]:
    """A constraint on a target argument that generalises what the training sessions did: a command's program, an
    address's domain, a URL's host; any other target must be one of the values seen (a named list)."""
    if "code_exec" in TOOLS[tool]["categories"]:
        programs = sorted({m.group(1) for v in values if (m := _PROGRAM.match(v))})
        return {"type": "string", "pattern": "^\\s*(?:" + "|".join(map(re.escape, programs)) + ")(?:\\s|$)"}, []
    if all(_EMAIL.match(v) for v in values):
        domains = sorted({m.group(1).lower() for v in values if (m := _EMAIL.match(v))})
        return {"email_domain_in": list_name}, domains
    if all(_URL.match(v) for v in values):
        hosts = sorted({m.group(1).lower() for v in values if (m := _URL.match(v))})
        return {"url_host_in": list_name}, hosts
    return {"in_list": list_name}, sorted(set(values))


def matrix(training: Iterable[Session]) -> dict[str, Any]:
    """One workflow per data set workflow: its agent; the tools its benign training sessions called; for each called
    tool that is sensitive or whose target is a URL, a constraint on the target argument from the values seen,
    which is also the `untrusted_flow` exemption for sensitive tools (a known recipient after reading a mail)."""
    calls: dict[str, dict[str, dict[str, list[str]]]] = {}
    agents: dict[str, str] = {}
    for s in training:
        assert not s.hijacked, "the author sees benign sessions only"
        agents[s.scenario.workflow] = s.scenario.agent
        seen = calls.setdefault(s.scenario.workflow, {})
        for e in s.events:
            if e["kind"] == "tool_call":
                tool = e["tool"]
                target = TOOLS[tool["name"]].get("resource")
                values = seen.setdefault(tool["name"], {}).setdefault(target or "", [])
                value = tool.get("arguments", {}).get(target) if target else None
                if isinstance(value, str):
                    values.append(value)
    workflows: dict[str, Any] = {}
    for wf, tools in sorted(calls.items()):
        arguments: dict[str, Any] = {}
        unless: dict[str, Any] = {}
        lists: dict[str, list[str]] = {}
        for tool, by_target in sorted(tools.items()):
            target = TOOLS[tool].get("resource")
            values = by_target.get(target or "", [])
            sensitive = bool(_SENSITIVE.intersection(TOOLS[tool]["categories"]))
            if not target or not values or not (sensitive or all(_URL.match(v) for v in values)):
                continue
            name = f"{tool}_{target}_seen"
            schema, entries = _constraint(tool, values, name)
            if entries:
                lists[name] = entries
            arguments[tool] = {"type": "object", "properties": {target: schema}, "required": [target]}
            if sensitive:
                unless[tool] = arguments[tool]
        workflows[wf] = {
            "agents": [agents[wf]], "risk": "high", "mode": "agentic",
            "approver": "secops", "detector": "secops", "responder": "secops", "lists": lists,
            "scope": {"tools": sorted(tools), "arguments": arguments, "untrusted_flow": {"unless": unless}},
        }
    return {"defaults": {"security_owner": "secops"},
            "owners": {"secops": {"name": "Security Operations", "kind": "team", "contacts": {"slack": "C0SECOPS"}}},
            "workflows": workflows, "tools": TOOLS}


def policy(training: Iterable[Session]) -> Policy:
    return build_policy(Matrix.model_validate(matrix(training)), CATALOGUE, sha256="third-party-bench")
