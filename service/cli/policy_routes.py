"""`warden policy routes`: print who gets a workflow's findings (warden.policy.routes) as lines, a tree or JSON."""

from __future__ import annotations

from typing import Any

import click

from service.cli.policy_output import emit_json, emit_jsonl

Node = tuple[str, list["Node"]]


def _who(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "-"
    contacts = ", ".join(f"{n} {a}" for n, a in owner["contacts"].items()) or "no contact"
    return f"{owner['id']} ({owner['name'] or 'not defined'}; {contacts})"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _gate(g: dict[str, Any]) -> str:
    if g["gate"] == "identity_changes":
        return (f"identity changes {', '.join(g['operations'])}: approval by the {g['approval_from']} "
                f"({g['approver'] or 'none named'}) within {_duration(g['window_s'])}")
    if g["gate"] == "categories":
        return (f"calls of {', '.join(g['categories'])}: approval by {g['approver'] or 'none named'} first, "
                f"{_duration(g['timeout_s'])} per escalation step")
    return f"custom rule {g['rule']}: approval by {g['approver'] or 'none named'} first"


def _playbook(p: dict[str, Any]) -> str:
    dry = " (dry run)" if p["dry_run"] else ""
    return (f"{p['playbook']}{dry} on {', '.join(p['rules'])} at {p['min_severity']} or above, gate {p['gate']} "
            f"(approval timeout {_duration(p['approval_timeout_s'])}): {' > '.join(p['steps']) or 'no steps'}")


def _tier(t: dict[str, Any]) -> str:
    cats = f" on {', '.join(t['categories'])} calls" if t["categories"] else ""
    approval = f" ({t['approval']} when asked first)" if t["approval"] != t["tier"] else ""
    return f"{', '.join(t['rules'])}{cats}: {t['tier']}{approval} [{t['from']}]"


def _tree(r: dict[str, Any]) -> Node:
    chain: list[Node] = [(f"{s['step']}. {_who(s['owner'])} after {_duration(s['ack_timeout_s'])}"
              + (", may approve" if s["approves"] else ""), []) for s in r["escalation"]]
    named = ("responder", "approver", "detector", "business_owner", "data_owner")
    roles: list[Node] = [(f"{role}: {_who(r[role])}", []) for role in named if r[role] is not None]
    channels: list[Node] = [(f"{notifier}: {', '.join(addresses)}", [])
                            for notifier, addresses in r["channels"].items()]
    tiers: list[Node] = [(_tier(t), []) for t in r["tiers"]]
    tiers.append(("every other finding: the built-in defaults (docs/scope.md, response tiers)", []))
    return (f"{r['workflow']} (risk {r['risk']}, {r['mode']}; agents: {', '.join(r['agents']) or 'none'})", [
        *roles,
        ("escalation", chain or [("none", [])]),
        ("channels", channels or [("none", [])]),
        ("gates", [(_gate(g), []) for g in r["gates"]] or [("none", [])]),
        ("playbooks", [(_playbook(p), []) for p in r["playbooks"]] or [("none", [])]),
        ("tiers", tiers),
    ])


def _draw(node: Node, prefix: str = "", last: bool = True, root: bool = True) -> list[str]:
    label, children = node
    lines = [label if root else f"{prefix}{'└── ' if last else '├── '}{label}"]
    inner = "" if root else prefix + ("    " if last else "│   ")
    for i, child in enumerate(children):
        lines += _draw(child, inner, i == len(children) - 1, root=False)
    return lines


def _flat(node: Node) -> list[str]:
    """One line per leaf, prefixed with its section: easy to grep."""
    label, children = node
    out = [label]
    for section, items in children:
        if not items:
            out.append(section)
        for item, _ in items:
            out.append(f"{section}: {item}")
    return out


def print_routes(r: dict[str, Any], fmt: str, tree: bool) -> None:
    if fmt == "json":
        emit_json(r)
    elif fmt == "jsonl":
        emit_jsonl([{"route": r}, {"summary": {"workflow": r["workflow"], "escalation_steps": len(r["escalation"]),
                                               "gates": len(r["gates"]), "playbooks": len(r["playbooks"])}}])
    else:
        for line in (_draw if tree else _flat)(_tree(r)):
            click.echo(line)
