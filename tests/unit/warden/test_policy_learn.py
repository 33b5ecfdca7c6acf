"""`warden policy learn`: a draft that generalises (a new address at a seen domain passes, a new external domain
fires; a number in the learned range passes, one far outside fires; a new tool fires), is the same for the same
input, always lints clean, keeps secrets out, and reports and skips bad input."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.cli import main
from service.runtime.catalogue import load
from service.runtime.settings import BUNDLED_POLICY
from streams.backtest import backtest, frame
from warden.policy.learn.emit import Noted, emit, plain

AGENT = "billing-agent-1"  # the bundled matrix's billing-agent workflow


def learn(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["policy", "learn", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def call(n: int, tool: str, arguments: dict[str, Any], agent: str = AGENT, session: str | None = None
         ) -> dict[str, Any]:
    return {"event_id": f"e-{tool}-{n}", "ts": f"2026-11-02T10:{n // 60:02d}:{n % 60:02d}Z", "kind": "tool_call",
            "agent": {"id": agent}, "session_id": session or f"s-{n % 7}",
            "tool": {"name": tool, "arguments": arguments}}


def training() -> list[dict[str, Any]]:
    """Mail to four colleagues at example.com and once to one partner address; payments of 100 to 900."""
    events = [call(i, "mail.send", {"to": [f"{name}@example.com"], "subject": "Invoice"})
              for i, name in enumerate(["ana", "bo", "cy", "di", "ana", "bo"])]
    events.append(call(10, "mail.send", {"to": ["ap@partner-corp.org"]}))
    events += [call(20 + i, "billing.pay_vendor", {"payee": p, "amount": a, "currency": "EUR"})
               for i, (p, a) in enumerate([("acme-logistics", 100), ("globex-cloud", 900), ("acme-logistics", 450)])]
    return events


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


@pytest.fixture
def drafted(tmp_path: Path) -> Path:
    out = tmp_path / "draft"
    code, stdout, _ = learn(str(write(tmp_path / "events.jsonl", training())), "--policy", str(BUNDLED_POLICY),
                            "--out", str(out))
    assert code == 0, stdout
    return out


def findings(draft: Path, *events: dict[str, Any]) -> set[tuple[str, str]]:
    """(rule, event id) of every finding of the draft's scope rules, shadow or not."""
    data = "".join(json.dumps(e) + "\n" for e in events).encode()
    result = backtest(data, load(draft))
    assert not result.invalid
    return {(f.rule, f.event_id) for f in result.findings if f.rule in {"argument_out_of_scope", "unapproved_tool"}}


def test_a_new_address_at_a_seen_domain_passes_and_a_new_external_domain_fires(drafted: Path) -> None:
    new_colleague = call(40, "mail.send", {"to": ["eve@example.com"]})
    outsider = call(41, "mail.send", {"to": ["eve@evil.example.net"]})
    partner_seen = call(42, "mail.send", {"to": ["ap@partner-corp.org"]})
    partner_other = call(43, "mail.send", {"to": ["ceo@partner-corp.org"]})  # seen once: only that address
    found = findings(drafted, new_colleague, outsider, partner_seen, partner_other)
    assert found == {("argument_out_of_scope", outsider["event_id"]),
                     ("argument_out_of_scope", partner_other["event_id"])}


def test_a_number_in_the_learned_range_passes_and_one_far_outside_fires(drafted: Path) -> None:
    inside = call(50, "billing.pay_vendor", {"payee": "globex-cloud", "amount": 700, "currency": "EUR"})
    far = call(51, "billing.pay_vendor", {"payee": "globex-cloud", "amount": 90_000, "currency": "EUR"})
    negative = call(52, "billing.pay_vendor", {"payee": "globex-cloud", "amount": -5, "currency": "EUR"})
    assert findings(drafted, inside, far, negative) == {("argument_out_of_scope", far["event_id"]),
                                                        ("argument_out_of_scope", negative["event_id"])}


def test_a_tool_never_seen_fires_and_every_drafted_rule_is_in_shadow(drafted: Path) -> None:
    new_tool = call(60, "billing.issue_refund", {"invoice": "INV-1", "amount": 5})
    assert findings(drafted, new_tool) == {("unapproved_tool", new_tool["event_id"])}
    result = backtest(json.dumps(new_tool).encode(), load(drafted))
    assert [f.shadow for f in result.findings if f.rule == "unapproved_tool"] == [True]
    learned = yaml.safe_load((drafted / "50-learned.yaml").read_text())
    assert {r: v["mode"] for r, v in learned["rules"]["builtin"].items()} == dict.fromkeys(
        ["unapproved_tool", "argument_out_of_scope", "data_out_of_scope", "secret_access",
         "unreviewed_identity_change"], "shadow")


def test_each_entry_carries_its_evidence_as_a_comment(drafted: Path) -> None:
    text = (drafted / "50-learned.yaml").read_text()
    assert "# mail.send: 7 events, 6 session(s), seen 2026-11-02T10:00:00Z .. 2026-11-02T10:00:10Z; catalogue: " \
           "external_comm" in text
    assert "e-mail: 1 domain(s) by domain, 1 exact address(es) at 1 external domain(s) seen few times" in text
    assert "number range 100..900 seen, 0..1800 allowed (headroom)" in text


def test_the_same_input_gives_the_same_draft_byte_for_byte(tmp_path: Path) -> None:
    events = write(tmp_path / "e.jsonl", training()[::-1] + training())
    texts = []
    for n in range(2):
        out = tmp_path / f"d{n}"
        assert learn(str(events), "--policy", str(BUNDLED_POLICY), "--out", str(out))[0] == 0
        texts.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert texts[0] == texts[1]


def test_secret_looking_values_never_reach_the_draft(tmp_path: Path) -> None:
    token = "sk-proj-9fQz7XbL2mN4pR8sT1vW3yA6cE0gH5jK"
    events = [call(i, "vault.read", {"path": f"vault://billing/{token}" if i % 2 else "vault://billing/stripe"})
              for i in range(6)]
    events += [call(10 + i, "http.post", {"auth": token, "url": f"https://hooks.example.com/{token}"})
               for i in range(4)]
    out = tmp_path / "d"
    assert learn(str(write(tmp_path / "e.jsonl", events)), "--policy", str(BUNDLED_POLICY), "--out", str(out))[0] == 0
    text = (out / "50-learned.yaml").read_text()
    assert token not in text and token[:12] not in text
    assert "hooks.example.com" in text  # the host of the URL is kept, its secret path is not


def test_a_malformed_or_hostile_file_is_reported_and_skipped(tmp_path: Path) -> None:
    good = write(tmp_path / "good.jsonl", training())
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_bytes(b"[" * 5000 + b"\n" + b'{"event_id": "a", "event_id": "b"}\n' + b'{"amount": NaN}\n'
                        + b"\xff\xfe\x00garbage\n" + json.dumps(call(1, "x\u202e", {"n": 1e308})).encode() + b"\n")
    truncated = tmp_path / "spans.bin"
    truncated.write_bytes(frame(b"\x0a\x02") + b"\x00\x00\x10\x00abc")
    missing = tmp_path / "nope.jsonl"
    out = tmp_path / "d"
    code, stdout, _ = learn(str(hostile), str(missing), str(good), "--policy", str(BUNDLED_POLICY), "--out", str(out))
    assert code == 0, stdout
    assert "hostile.jsonl: line 1: too_deep" in stdout and "duplicate_key" in stdout
    assert "non_finite_number" in stdout and "nope.jsonl: cannot read" in stdout
    assert "OK:" in stdout and (out / "50-learned.yaml").is_file()
    code, stdout, _ = learn(str(truncated), str(good), "--format", "otlp_proto", "--out", str(tmp_path / "d2"))
    assert code == 2 and "spans.bin: not otlp_proto" in stdout  # no valid event at all: exit 2, reasons shown


def test_learn_refuses_a_folder_that_is_not_empty_and_a_policy_that_does_not_load(tmp_path: Path) -> None:
    events = write(tmp_path / "e.jsonl", training())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.yaml").write_text("{}")
    assert learn(str(events), "--out", str(tmp_path / "full"))[0] == 2
    (tmp_path / "bad.yaml").write_text("version: 2\n")
    assert learn(str(events), "--policy", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "d"))[0] == 3


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=24)
_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | _TEXT
                       | st.sampled_from(["a@example.com", "x@evil.net", "https://a.example.org/p", "INV-0042",
                                          "cat /etc/passwd", "vault://a/b", "*", "[", "?x"]),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                       max_leaves=8)
_EVENT = st.fixed_dictionaries({
    "agent": st.sampled_from([AGENT, "iam-agent-1", "stranger\u001b[31m", "x" * 200, "*", "ünïcode"]),
    "tool": st.sampled_from(["mail.send", "vault.read", "directory.grant_role", "shell.exec", "files.delete*",
                             "odd[tool]?", "new.tool"]) | st.text(string.printable, min_size=1, max_size=12),
    "arguments": st.dictionaries(st.sampled_from(["to", "path", "user", "cmd", "amount", "x y", "$ref"]), _VALUES,
                                 max_size=4),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_EVENT, min_size=1, max_size=12), st.booleans())
def test_a_draft_always_lints_clean(tmp_path_factory: pytest.TempPathFactory, drawn: list[dict[str, Any]],
                                    with_current: bool) -> None:
    tmp = tmp_path_factory.mktemp("learn")
    events = [call(i, e["tool"], e["arguments"], agent=e["agent"]) for i, e in enumerate(drawn)]
    for i, e in enumerate(drawn):  # the same drawn text as resource ids and identity operations
        rid = str(next(iter(e["arguments"].values()), e["tool"])) or "x"
        events.append({**call(100 + i, "-", {}, agent=e["agent"]), "kind": ("data_access", "secret_access")[i % 2],
                       "resource": {"type": "x", "id": rid}, "tool": None})
        events.append({**call(200 + i, "-", {}, agent=e["agent"]), "kind": "identity_change", "tool": None,
                       "identity_change": {"operation": e["tool"], "target": rid}})
    current = ["--policy", str(BUNDLED_POLICY)] if with_current else []
    code, stdout, stderr = learn(str(write(tmp / "e.jsonl", events)), *current, "--out", str(tmp / "d"))
    assert code == 0, stdout + stderr
    load(tmp / "d")  # raises PolicyError when it does not lint


def test_the_emitter_writes_hostile_text_that_reads_back_the_same() -> None:
    doc = {"workflows": {"w\u001b[31m": Noted({"tools": [Noted("a\nb\u202e", ("evidence\nnext line\u202e",)),
                                                          "k: v", "\x7f\x85"]}, ("top",))}}
    text = emit(doc, ("header",))
    assert yaml.safe_load(text) == plain(doc)
    assert all(line.lstrip().startswith(("#", "-", "workflows", '"w', "tools")) for line in text.splitlines())


def test_an_operation_the_approver_approved_needs_approval_and_one_never_approved_is_not_exempted(
        tmp_path: Path) -> None:
    def at(n: int, **event: Any) -> dict[str, Any]:
        return {"event_id": f"i-{n}", "ts": f"2026-11-02T11:00:{n:02d}Z", "agent": {"id": "iam-agent-1"},
                "session_id": "s-iam", **event}

    events = [at(1, kind="approval", approval={"approver": "jordan", "decision": "approved", "ref": "user:bob"}),
              at(2, kind="identity_change", identity_change={"operation": "revoke_role", "target": "user:bob"}),
              at(3, kind="identity_change", identity_change={"operation": "disable_user", "target": "user:eve"}),
              at(4, kind="approval", approval={"approver": "mallory", "decision": "approved", "ref": "user:eve"}),
              at(5, kind="identity_change", identity_change={"operation": "suspend_user", "target": "user:eve"})]
    out = tmp_path / "d"
    assert learn(str(write(tmp_path / "e.jsonl", events)), "--policy", str(BUNDLED_POLICY), "--out", str(out))[0] == 0
    learned = yaml.safe_load((out / "50-learned.yaml").read_text())
    gate = learned["workflows"]["access-provisioner"]["scope"]["identity_changes"]
    assert gate["require_approval"] == ["create_key", "grant_*", "reset_mfa", "revoke_role"]  # mallory is not jordan
    text = (out / "50-learned.yaml").read_text()
    assert "revoke_role: 1 event, 1 session(s)" in text and "approved beforehand by jordan in 1/1" in text
    assert "disable_user: 1 event, 1 session(s)" in text and "in 0/1; not gated" in text


def test_data_and_secrets_become_globs_at_their_common_prefix(tmp_path: Path) -> None:
    def read(n: int, kind: str, rid: str) -> dict[str, Any]:
        return {"event_id": f"r-{n}", "ts": "2026-11-02T12:00:00Z", "agent": {"id": AGENT}, "kind": kind,
                "resource": {"type": "x", "id": rid, "classification": "confidential"}}

    events = [read(1, "data_access", "db://billing/invoices/INV-1"), read(2, "data_access", "db://billing/invoices/2"),
              read(3, "data_access", "db://crm/accounts/7"), read(4, "secret_access", "vault://billing/stripe-key")]
    out = tmp_path / "d"
    assert learn(str(write(tmp_path / "e.jsonl", events)), "--policy", str(BUNDLED_POLICY), "--out", str(out))[0] == 0
    scope = yaml.safe_load((out / "50-learned.yaml").read_text())["workflows"]["billing-agent"]["scope"]
    assert scope["data"] == ["db://billing/invoices/*", "db://crm/accounts/7"]
    assert scope["secrets"] == ["vault://billing/stripe-key"] and scope["max_classification"] == "confidential"
    found = findings(out, read(5, "data_access", "db://billing/invoices/INV-9"), read(6, "data_access", "db://hr/x"))
    assert found == set()  # data_out_of_scope is not in `findings`' rules: checked below
    result = backtest(json.dumps(read(6, "data_access", "db://hr/x")).encode(), load(out))
    assert [(f.rule, f.shadow) for f in result.findings] == [("data_out_of_scope", True)]


def test_a_file_past_the_document_limit_is_streamed_and_an_over_long_line_is_only_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.learn

    monkeypatch.setattr(streams.learn, "MAX_DOCUMENT_BYTES", 64)  # every file here is "large": streamed
    whole = Path.read_bytes

    def never_whole(self: Path) -> bytes:
        if self.name in {"big.jsonl", "spans.bin"}:
            raise OSError("read whole, not streamed")
        return whole(self)

    monkeypatch.setattr(Path, "read_bytes", never_whole)
    events = tmp_path / "big.jsonl"
    lines = [json.dumps(e) for e in training()]
    events.write_text("\n".join([lines[0], "x" * 5000, *lines[1:]]) + "\n")
    spans = tmp_path / "spans.bin"
    spans.write_bytes(frame(b"\x00" * 3000) + frame(b"\x0a\x00") + b"\x00\x00\x00\x09abc")
    code, stdout, _ = learn(str(events), "--max-bytes", "2048", "--policy", str(BUNDLED_POLICY), "--out",
                            str(tmp_path / "d"))
    assert code == 0, stdout
    assert "big.jsonl: line 2: too_large" in stdout and "10 events" in stdout
    code, stdout, _ = learn(str(spans), "--format", "otlp_proto", "--max-bytes", "2048", "--out", str(tmp_path / "e"))
    assert code == 2
    assert "message 1 (byte 0): too_large" in stdout and "its length prefix says 9 bytes" in stdout


def test_long_input_reports_progress_on_standard_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.learn

    monkeypatch.setattr(streams.learn, "PROGRESS_EVERY", 4)
    code, stdout, stderr = learn(str(write(tmp_path / "e.jsonl", training())), "--out", str(tmp_path / "d"))
    assert code == 0, stdout
    assert stderr.splitlines() == ["warden: 4 events read", "warden: 8 events read"]
