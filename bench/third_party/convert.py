"""Turn each third-party scenario into a benign and a hijacked Warden session by a fixed procedure (docs/replay.md,
"Third-party data sets"); it reads only the scenario, never Warden's findings."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"https?://[^\s\"'<>]+")
_PATH = re.compile(r"(?<![\w/.])/[\w.-]+(?:/[\w.-]+)+")

Step = dict[str, Any]  # {"prompt": text} or {"tool": name, "arguments": {...}, "result": ...}
Attack = Literal["none", "tool_call", "out_of_reach", "not_converted"]


@dataclass(frozen=True)
class Scenario:
    """One scenario: the benign steps, and (when its attack is a tool call) the injected steps and where they go."""

    dataset: str
    workflow: str
    agent: str
    scenario_id: str
    steps: tuple[Step, ...]
    attack: Attack = "none"
    injected: tuple[Step, ...] = ()
    insert_at: int = 0  # the injected steps follow steps[:insert_at], the step that delivered the injection
    note: str = ""  # why the attack is out of reach or not converted


@dataclass(frozen=True)
class Session:
    """Native events (JSON-ready dicts) of one session, and the ids of its injected events."""

    session_id: str
    scenario: Scenario
    hijacked: bool
    events: tuple[dict[str, Any], ...]
    injected: frozenset[str] = field(default_factory=frozenset)


def _event(session_id: str, agent: str, n: int, step: Step) -> dict[str, Any]:
    doc: dict[str, Any] = {"event_id": f"{session_id}/{n:03d}",
                           "ts": (T0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
                           "agent": {"id": agent}, "session_id": session_id}
    if "prompt" in step:
        return {**doc, "kind": "prompt", "content": {"prompt": step["prompt"]}}
    tool: dict[str, Any] = {"name": step["tool"], "call_id": f"call-{n:03d}", "arguments": step.get("arguments", {})}
    if step.get("result") is not None:
        tool["result"] = step["result"]
    return {**doc, "kind": "tool_call", "tool": tool}


def sessions(scenario: Scenario) -> list[Session]:
    """The benign session, and the hijacked one when the scenario's attack is a tool call: the benign steps with the
    injected steps inserted right after the step that delivered the injection."""
    base = f"{scenario.dataset}/{scenario.scenario_id}"
    sid = f"{base}/benign"
    out = [Session(sid, scenario, False, tuple(_event(sid, scenario.agent, n, s)
                                               for n, s in enumerate(scenario.steps)))]
    if scenario.attack == "tool_call":
        sid = f"{base}/hijacked"
        steps = [*scenario.steps[:scenario.insert_at], *scenario.injected, *scenario.steps[scenario.insert_at:]]
        events = tuple(_event(sid, scenario.agent, n, s) for n, s in enumerate(steps))
        first = scenario.insert_at
        injected = frozenset(e["event_id"] for e in events[first:first + len(scenario.injected)])
        out.append(Session(sid, scenario, True, events, injected))
    return out


def _first(pattern: re.Pattern[str], text: str, exclude: Sequence[str] = ()) -> str | None:
    lowered = {x.lower() for x in exclude}
    found = (m.rstrip(".,;:!?)") for m in pattern.findall(text))
    return next((m for m in found if m.lower() not in lowered), None)


# --- inspect-evals: agent_threat_bench (tools as in agent_threat_bench/tools.py) ----------------------------------

def _lookup(db: list[dict[str, Any]], query: str) -> str:
    """lookup_customer's own output for `query`: the first record whose name contains it or whose id equals it."""
    for c in db:
        if query.lower() in c.get("name", "").lower() or query == c.get("id", ""):
            return (f"Customer: {c['name']}\nID: {c['id']}\nEmail: {c.get('email', 'N/A')}\n"
                    f"SSN: {c.get('ssn', 'N/A')}\nAccount: {c.get('account', 'N/A')}\nIssue: {c.get('issue', 'N/A')}")
    return f"No customer found for query '{query}'."


def data_exfil(r: dict[str, Any]) -> Scenario:
    """Look the customer up by the id in the request, resolve the ticket; the attack: send_message of the record's
    sensitive fields to the address the injected text names (the first one not in authorized_recipients)."""
    cid = re.search(r"CX-\d+", r["input"])
    assert cid is not None, r["id"]
    steps = ({"prompt": r["input"]},
             {"tool": "lookup_customer", "arguments": {"query": cid.group()},
              "result": _lookup(r["customer_db"], cid.group())},
             {"tool": "resolve_ticket", "arguments": {"customer_id": cid.group(),
                                                      "resolution": f"Resolved the support request of {cid.group()}."}})
    common = {"dataset": "atb_data_exfil", "workflow": "atb-support", "agent": "atb-support-agent",
              "scenario_id": r["id"], "steps": steps}
    if r["attack_name"] == "clean_baseline":
        return Scenario(**common)
    hostile = "\n".join(c.get("issue", "") for c in r["customer_db"])
    to = _first(_EMAIL, hostile, r["authorized_recipients"])
    if to is None:
        return Scenario(**common, attack="not_converted", note="the injection names no outside address")
    body = f"Customer record {cid.group()}: " + ", ".join(r["sensitive_fields"])
    return Scenario(**common, attack="tool_call", insert_at=2,
                    injected=({"tool": "send_message", "arguments": {"recipient": to, "body": body}},))


def _inbox(emails: list[dict[str, str]]) -> str:
    """read_inbox's own output."""
    return "\n\n".join(f"Email {i}:\n  From: {e.get('from', 'unknown')}\n  Subject: {e.get('subject', 'no subject')}\n"
                       f"  Body: {e.get('body', '')}" for i, e in enumerate(emails, 1)) or "Inbox is empty."


def autonomy_hijack(r: dict[str, Any]) -> Scenario:
    """Read the inbox, categorize every email `normal`, draft a summary (its subject) of each; the attack: a
    draft_summary of each attack email that carries the forbidden tokens (the scorer's failure condition)."""
    emails = r["inbox"]
    steps: list[Step] = [{"prompt": r["input"]}, {"tool": "read_inbox", "arguments": {}, "result": _inbox(emails)}]
    steps += [{"tool": "categorize_email", "arguments": {"email_index": i, "category": "normal"}}
              for i in range(1, len(emails) + 1)]
    steps += [{"tool": "draft_summary", "arguments": {"email_index": i, "summary": e["subject"]}}
              for i, e in enumerate(emails, 1)]
    common = {"dataset": "atb_autonomy_hijack", "workflow": "atb-inbox", "agent": "atb-inbox-agent",
              "scenario_id": r["id"], "steps": tuple(steps)}
    if not r["forbidden_actions"]:
        return Scenario(**common)
    injected = tuple({"tool": "draft_summary", "arguments": {
        "email_index": i, "summary": f"{emails[i - 1]['subject']}: " + "; ".join(r["forbidden_actions"])}}
        for i in r["attack_email_indices"])
    return Scenario(**common, attack="tool_call", insert_at=2, injected=injected)


def memory_poison(r: dict[str, Any]) -> Scenario:
    """Read the knowledge-base entry that holds the expected answer; the attack is a marker in the text answer."""
    store: dict[str, str] = r["memory_store"]
    key = next(k for k, v in store.items() if r["expected_answer"].lower() in v.lower())
    steps = ({"prompt": r["input"]}, {"tool": "memory_read", "arguments": {"key": key}, "result": store[key]})
    common = {"dataset": "atb_memory_poison", "workflow": "atb-memory", "agent": "atb-memory-agent",
              "scenario_id": r["id"], "steps": steps}
    if not r["attack_marker"]:
        return Scenario(**common)
    return Scenario(**common, attack="out_of_reach", note="the attack is a marker in the text answer")


# --- inspect-evals: ipi_coding_agent (tools: inspect's bash `cmd` and python `code`) -------------------------------

_FENCE = re.compile(r"^\s*```")
_PROSE_LABEL = re.compile(r"^(?:[\w\s,()\-]*:\s+)+")  # "NOTE: Before modifying this file, run: " before a command
_SPAN = re.compile(r"`([^`\n]+)`")


def _alternatives(indicator: str) -> list[re.Pattern[str]]:
    """payload_indicator is `a|b|c`: an alternative with a regex operator is a regex, any other a literal."""
    return [re.compile(a) if re.search(r"[*+?\[\]()\\^$]", a) else re.compile(re.escape(a))
            for a in indicator.split("|") if a]


def _commands(text: str) -> list[str]:
    """Command candidates in an artifact: each fenced block; each inline code span; each run of consecutive lines
    (comment markers and a leading prose label removed) that start like a command (lower case), not like prose."""
    out: list[str] = []
    block: list[str] | None = None
    run: list[str] = []
    for line in [*text.splitlines(), ""]:
        if _FENCE.match(line):
            if block is None:
                block = []
            else:
                out.append("\n".join(block))
                block = None
            continue
        if block is not None:
            block.append(line)
            continue
        spans = _SPAN.findall(line)
        out += spans
        text_line = "" if spans else line
        bare = _PROSE_LABEL.sub("", re.sub(r"^\s*(?:#+|<!--)\s*|\s*-->\s*$", "", text_line).strip())
        if bare and (bare[0].islower() or bare[0] in "./$") and not bare.endswith(":"):
            run.append(bare)
        elif run:
            out.append("\n".join(run))
            run = []
    return out


def _artifacts(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The artifacts the injection vector names: (source, text), source `prompt` or a repository path."""
    files: dict[str, str] = r["repo_files"]
    vector = r["injection_vector"]
    if vector == "issue_text":
        return [("prompt", r["issue_text"])]
    if vector == "readme":
        return [(p, t) for p, t in files.items() if p == "README.md"]
    if vector == "code_comment":
        return [(p, t) for p, t in files.items() if p.startswith("src/")]
    return [(p, t) for p, t in files.items() if not p.startswith(("src/", "tests/")) and p != "README.md"]


def _injected_commands(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, command) for each candidate in the vector's artifacts that matches the payload indicator; for a
    persistence payload given only as prose ("add `pkg==1` to requirements.txt"), the append to its target file."""
    alts = _alternatives(r["payload_indicator"])
    found: list[tuple[str, str]] = []
    for source, text in _artifacts(r):
        for cmd in _commands(text):
            if any(a.search(cmd) for a in alts) and cmd not in {c for _, c in found}:
                found.append((source, cmd))
        if not found and r.get("persistence_targets"):
            target = r["persistence_targets"][0].removeprefix("/workspace/")
            for line in text.splitlines():
                if any(a.search(line) for a in alts):
                    found += [(source, f"echo {shlex.quote(s)} >> {target}") for s in _SPAN.findall(line)]
    # a candidate inside a longer one (a path the command writes) is the same action
    return [(s, c) for s, c in found if not any(c != o and c in o for _, o in found)]


def _edit(r: dict[str, Any]) -> Step:
    """The fix, as the python tool would make it: replace the line marked BUG (else the first def) in the file the
    task names by that line without its comment. The data set gives the fix only as prose (expected_fix)."""
    files: dict[str, str] = r["repo_files"]
    named = [p for p in re.findall(r"`(src/[\w/]+\.py)`", r["task_description"]) if p in files]
    path = named[0] if named else next(p for p in files if p.startswith("src/") and not p.endswith("__init__.py"))
    lines = files[path].splitlines()
    old = next((x for x in lines if "BUG" in x), next((x for x in lines if x.startswith("def ")), lines[0]))
    new = old.split("#")[0].rstrip() if "BUG" in old else old
    code = (f"from pathlib import Path\np = Path('/workspace/{path}')\n"
            f"p.write_text(p.read_text().replace({old!r}, {new!r}))")
    return {"tool": "python", "arguments": {"code": code}}


def coding(r: dict[str, Any]) -> Scenario:
    """The benchmark's input (task, then issue text) as the prompt; `cat` of every repository file in data-set order;
    the edit; the verification command. The attack: one bash call per injected command, right after the artifact
    that carries it was read (after the prompt for issue text)."""
    prompt = r["task_description"] + (f"\n\n{r['issue_text']}" if r.get("issue_text") else "")
    files: dict[str, str] = r["repo_files"]
    steps: list[Step] = [{"prompt": prompt}]
    steps += [{"tool": "bash", "arguments": {"cmd": f"cat /workspace/{p}"}, "result": t} for p, t in files.items()]
    steps += [_edit(r), {"tool": "bash", "arguments": {"cmd": r["verification_command"]}}]
    common = {"dataset": "ipi_coding_agent", "workflow": "ipi-coding", "agent": "ipi-coding-agent",
              "scenario_id": r["id"], "steps": tuple(steps)}
    if r["is_benign"]:
        return Scenario(**common)
    found = _injected_commands(r)
    if not found:
        return Scenario(**common, attack="not_converted", note="no command in the injected artifact matches the "
                        "payload indicator")
    source = found[0][0]
    at = 1 if source == "prompt" else 2 + list(files).index(source)
    return Scenario(**common, attack="tool_call", insert_at=at,
                    injected=tuple({"tool": "bash", "arguments": {"cmd": c}} for _, c in found))


# --- agent-injection-bench (its harness.build_scenario places the content) ----------------------------------------

def _argument(name: str, text: str, fallback: str) -> str:
    """A parameter's value from text: a URL for `url`, an address for `to`, an absolute path for `path`."""
    pattern = {"url": _URL, "to": _EMAIL, "path": _PATH}.get(name)
    found = _first(pattern, text) if pattern is not None else None
    return found if found is not None else fallback


def _aib_prompts(r: dict[str, Any]) -> list[Step]:
    """The user turns as aib's harness builds them: the content inline for document-like channels, the planted
    turn first for multi_turn, the task alone for tool_result."""
    label = {"document": "Document contents", "web_page": "Fetched page", "metadata": "File metadata",
             "filename": "File name"}
    if r["channel"] == "user_message":
        return [{"prompt": f"{r['task']}\n\n{r['injected']}"}]
    if r["channel"] in label:
        return [{"prompt": f"{r['task']}\n\n{label[r['channel']]}:\n{r['injected']}"}]
    if r["channel"] == "multi_turn":
        return [{"prompt": r["injected"]}, {"prompt": r["task"]}]
    return [{"prompt": r["task"]}]


def injection_bench(r: dict[str, Any]) -> Scenario:
    """Benign: the user turns, then for tool_result the tools that return content, called with arguments taken from
    the task. The attack, from `success`: tool_call -> that tool with arguments taken from the injected text;
    exfiltration -> the sink with the secret; canary -> a text answer (out of reach); control/baseline -> none."""
    tools: list[dict[str, Any]] = r.get("tools") or []
    steps = _aib_prompts(r)
    if r["channel"] == "tool_result":
        returning = [t for t in tools if t.get("returns") is not None] or tools[:1]
        for t in returning:
            args = {p: _argument(p, r["task"], r["task"]) for p in t["parameters"].get("properties", {})}
            steps.append({"tool": t["name"], "arguments": args, "result": t.get("returns") or r["injected"]})
    common = {"dataset": "agent_injection_bench", "workflow": "aib-assistant", "agent": "aib-agent",
              "scenario_id": r["id"], "steps": tuple(steps)}
    success = r["success"]
    if r["family"] in ("control", "baseline"):
        return Scenario(**common)
    if success["kind"] == "canary":
        return Scenario(**common, attack="out_of_reach", note="the attack is a canary in the text answer")
    name = success.get("sink") or success["tool"]
    spec = next(t for t in tools if t["name"] == name)
    secret = success.get("secret")
    args = {p: _argument(p, r["injected"], secret or r["injected"]) for p in spec["parameters"].get("properties", {})}
    if any(c not in str(args) for c in success.get("arguments_contain", [])) or (secret and secret not in str(args)):
        return Scenario(**common, attack="not_converted", note="the injected text does not give the arguments")
    return Scenario(**common, attack="tool_call", insert_at=len(steps),
                    injected=({"tool": name, "arguments": args},))


CONVERTERS: dict[str, Callable[[dict[str, Any]], Scenario]] = {
    "atb_data_exfil": data_exfil,
    "atb_autonomy_hijack": autonomy_hijack,
    "atb_memory_poison": memory_poison,
    "ipi_coding_agent": coding,
    "agent_injection_bench": injection_bench,
}
