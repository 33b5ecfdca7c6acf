"""The printable evidence page of one incident: who approved, reviewed and responded, what was done, when, under
which policy, and whether the hash chain verifies. Pure: an incident as `Trail.incident` reads it in, HTML out.
Every string is escaped, since agent text (agent ids, targets, evidence, titles) is untrusted."""

from __future__ import annotations

from html import escape
from typing import Any

_APPROVALS = {"containment_approve", "containment_deny", "containment_steps_approved", "containment_steps_denied"}
_REVIEWS = {"acknowledged", "resolved", "false_positive", "release_requested"}

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; } th, td { border: 1px solid #bbb; padding: 4px 6px; text-align: left;
vertical-align: top; } th { background: #eee; } code { font-size: .9em; word-break: break-all; }
.ok { color: #060; font-weight: bold; } .broken { color: #b00; font-weight: bold; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; } dt { font-weight: bold; }
@media print { body { margin: 0; } a { color: inherit; text-decoration: none; } }
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _who(entry: dict[str, Any]) -> str:
    who = _e(entry["actor"])
    return who + (f" <span class=identity>({_e(entry['identity'])})</span>" if entry.get("identity") else "")


def _detail(detail: dict[str, Any]) -> str:
    return "<br>".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in detail.items())


def _people(entries: list[dict[str, Any]], kinds: set[str]) -> str:
    rows = [f"<li>{_e(e['kind'])} by {_who(e)} at {_e(e['at'])}</li>" for e in entries if e["kind"] in kinds]
    return f"<ul>{''.join(rows)}</ul>" if rows else "<p>nobody</p>"


def render(item: dict[str, Any]) -> str:
    """The whole page for one incident."""
    owners = item["owners"]
    chain = item["chain"]
    verdict = (f"<span class=ok id=chain-status>verified</span> ({chain['entries']} entries)" if chain["ok"] else
               "<span class=broken id=chain-status>BROKEN</span>: " + "; ".join(
                   f"entry {_e(b['seq'])}: {_e(b['reason'])}" for b in chain["breaks"]))
    facts = [("Status", item["status"]), ("Severity", item["severity"]), ("Rule", item["rule"]),
             ("Agent", item["agent_id"]), ("Workflow", item["workflow"] or "-"), ("Target", item["target"]),
             ("Findings", item["count"]), ("First seen", item["first_seen"]), ("Last seen", item["last_seen"]),
             ("Opened", item["opened_at"]), ("Responder", (owners.get("responder") or {}).get("id")),
             ("Approver", (owners.get("approver") or {}).get("id", "-")),
             ("Detector", (owners.get("detector") or {}).get("id", "-")),
             ("Frameworks", ", ".join(item["frameworks"])), ("Policy sha256 at detection", item["policy_sha256"])]
    timeline = "".join(
        f"<tr><td>{_e(e['seq'])}</td><td>{_e(e['at'])}</td><td>{_e(e['kind'])}</td><td>{_who(e)}</td>"
        f"<td>{_detail(e['detail'])}</td><td><code>{_e((e['policy_sha256'] or '-')[:16])}</code></td>"
        f"<td><code>{_e(e['hash'][:16])}</code></td></tr>" for e in item["timeline"])
    steps = "".join(
        f"<tr><td>{_e(st['playbook'])}</td><td>{_e(st['step'])}</td><td>{_e(st['action'])}</td>"
        f"<td>{_e(st['status'])}</td><td>{_e(st['gate'])}</td><td>{_e(st['decided_by'] or '-')}</td>"
        f"<td>{_e(st['ended_at'] or '-')}</td><td>{_detail(st['detail'])}</td></tr>" for st in item["containment"])
    evidence = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in item["evidence"].items())
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Warden evidence: incident #{_e(item['id'])}</title>
<style>{_STYLE}</style></head><body>
<h1 id=title>Incident #{_e(item['id'])}: {_e(item['title'])}</h1>
<p>Audit chain: {verdict}</p>
<h2>Incident</h2><dl>{''.join(f'<dt>{_e(k)}</dt><dd>{_e(v)}</dd>' for k, v in facts)}</dl>
<h2>Who approved</h2>{_people(item['timeline'], _APPROVALS)}
<h2>Who reviewed and responded</h2>{_people(item['timeline'], _REVIEWS)}
<h2>What was done</h2>
<table id=containment><tr><th>Playbook</th><th>Step</th><th>Action</th><th>Status</th><th>Gate</th>
<th>Approved by</th><th>Ended</th><th>Result</th></tr>{steps or '<tr><td colspan=8>no containment</td></tr>'}</table>
<h2>Evidence (redacted)</h2><dl id=evidence>{evidence}</dl>
<h2>Timeline</h2>
<table id=timeline><tr><th>#</th><th>When (UTC)</th><th>What</th><th>Who</th><th>Detail</th><th>Policy sha256</th>
<th>Entry hash</th></tr>{timeline}</table>
</body></html>
"""
