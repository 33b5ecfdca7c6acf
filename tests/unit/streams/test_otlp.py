"""OTLP span ingest, pure: real OpenTelemetry SDK spans, encoded by the OTLP exporter's own encoder, into events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.runtime.catalogue import load
from service.runtime.settings import BUNDLED_POLICY
from streams.detectors import DetectorState, detect
from streams.ingest.base import REASON_CODES
from streams.ingest.otlp import OtlpIngest, decode_message
from streams.ingest.otlp_agents import Bounds
from streams.ingest.otlp_wire import decode_spans
from tests.support.otel_spans import Encode, Recorder, otlp_json, otlp_proto, request, set_attribute
from warden.contract.events import ActivityEvent, Kind

POLICY = load(BUNDLED_POLICY)
LIMIT = 1_048_576


def _take(ingest: OtlpIngest, raw: bytes, *, offset: int = 0, now: float = 0.0, partition: int = 0,
          key: bytes | None = b"k") -> list[ActivityEvent]:
    return [e for b in ingest.take(raw, key=key, partition=partition, offset=offset, now=now, policy=POLICY)
            for e in b.decoded.events]


def _billing_turn(rec: Recorder) -> None:
    conv = {"gen_ai.conversation.id": "conv-7"}
    with rec.agent("billing-agent-1", **conv), \
            rec.tool("billing.lookup_invoice", {"invoice": "INV-2291"}, **{"gen_ai.tool.call.id": "call-1"}, **conv), \
            rec.tool("shell.exec", {"cmd": "cat /etc/passwd"}, **conv):
        pass


@pytest.mark.parametrize("encode", [otlp_proto, otlp_json], ids=["otlp_proto", "otlp_json"])
def test_tool_spans_exported_before_their_agent_span_wait_for_it_then_act_as_that_agent(encode: Encode) -> None:
    rec = Recorder(**{"service.name": "billing-svc"})
    _billing_turn(rec)
    spans = rec.finished()
    assert [s.name for s in spans][-1] == "invoke_agent billing-agent-1"  # the SDK exports the parent last
    ingest = OtlpIngest()
    assert _take(ingest, encode(spans[:-1]), offset=10) == []  # the tool spans name no agent: held
    assert ingest.lowest_held(0) == 10 and ingest.holds(0, 10)
    batches = ingest.take(encode(spans[-1:]), key=b"k", partition=0, offset=11, now=1.0, policy=POLICY)
    by_offset = {b.offset: b.decoded.events for b in batches}
    assert [e.kind for e in by_offset[11]] == [Kind.agent_invoke]
    tools = by_offset[10]
    assert {e.tool.name for e in tools if e.tool} == {"billing.lookup_invoice", "shell.exec"}
    assert {e.agent.id for e in tools} == {"billing-agent-1"}
    assert all(e.attributes["warden.agent_resolution"] == "ancestor" for e in tools)
    assert all(e.session_id == "conv-7" for e in tools)
    assert ingest.lowest_held(0) is None
    lookup = next(e for e in tools if e.tool and e.tool.name == "billing.lookup_invoice")
    assert lookup.tool and lookup.tool.arguments == {"invoice": "INV-2291"} and lookup.tool.call_id == "call-1"
    rules = {f.rule for e in tools for f in detect(e, POLICY, DetectorState())}
    assert "unapproved_tool" in rules  # shell.exec is outside the billing workflow's tools


def test_an_unknown_service_with_no_agent_is_released_after_the_wait_as_an_unowned_agent() -> None:
    rec = Recorder(**{"service.name": "mystery-svc"})
    with rec.span("invoke_agent"), rec.tool("kb.search", {"q": "x"}):  # parent names no agent
        pass
    tool_span, _parent = rec.finished()
    ingest = OtlpIngest(bounds=Bounds(wait_s=5.0))
    assert _take(ingest, otlp_proto([tool_span]), now=100.0) == []
    assert ingest.release(104.9, POLICY) == [] and ingest.holds(0, 0)
    [batch] = ingest.release(105.0, POLICY)
    [ev] = batch.decoded.events
    assert ev.agent.id == "mystery-svc" and ev.attributes["warden.agent_resolution"].startswith("unresolved")
    assert [f.rule for f in detect(ev, POLICY, DetectorState())] == ["unowned_agent"]
    assert not ingest.holds(0, 0)


def test_a_trace_whose_root_names_no_agent_is_unresolved_at_once_not_after_the_wait() -> None:
    rec = Recorder(**{"service.name": "mystery-svc"})
    with rec.span("root"), rec.tool("kb.search"):
        pass
    [ev] = _take(OtlpIngest(), otlp_proto(rec.finished()))
    assert ev.agent.id == "mystery-svc" and "no span of its trace" in ev.attributes["warden.agent_resolution"]


def test_resource_agent_id_then_a_service_name_the_matrix_lists_resolve_without_waiting() -> None:
    by_resource = Recorder(**{"service.name": "x", "gen_ai.agent.id": "research-rag-1"})
    with by_resource.span("root"), by_resource.tool("web.fetch", {"url": "https://arxiv.org"}):
        pass
    [ev] = _take(OtlpIngest(), otlp_proto(by_resource.finished()[:1]))
    assert ev.agent.id == "research-rag-1" and ev.attributes["warden.agent_resolution"] == "resource"
    by_service = Recorder(**{"service.name": "iam-agent-1"})
    with by_service.span("root"), by_service.tool("directory.lookup_user"):
        pass
    [ev] = _take(OtlpIngest(), otlp_proto(by_service.finished()[:1]))
    assert ev.agent.id == "iam-agent-1" and ev.attributes["warden.agent_resolution"] == "service"


def test_arguments_as_a_kvlist_or_a_json_string_are_the_same_object() -> None:
    rec = Recorder(**{"gen_ai.agent.id": "billing-agent-1"})
    with rec.tool("billing.issue_refund", {"invoice": "INV-1", "amount": 20000}):
        pass
    spans = rec.finished()
    [from_string] = _take(OtlpIngest(), otlp_proto(spans))
    req = request(spans)
    set_attribute(req, "execute_tool billing.issue_refund", "gen_ai.tool.call.arguments",
                  {"invoice": "INV-1", "amount": 20000})
    raw = otlp_proto(req)
    assert b'{"invoice"' not in raw  # a real kvlist on the wire, not a string
    [from_kvlist] = _take(OtlpIngest(), raw)
    [from_json] = _take(OtlpIngest(), otlp_json(req))  # kvlist in OTLP/JSON, int64 as a decimal string
    assert from_string.tool and from_kvlist.tool and from_json.tool
    assert from_string.tool.arguments == from_kvlist.tool.arguments == from_json.tool.arguments == {
        "invoice": "INV-1", "amount": 20000}
    rules = {f.rule for f in detect(from_kvlist, POLICY, DetectorState())}
    assert "argument_out_of_scope" in rules  # the refund is over the workflow's maximum


def test_the_openinference_dialect_maps_tool_llm_and_retriever_spans() -> None:
    rec = Recorder(**{"service.name": "oi-app"})
    with rec.span("agent", **{"openinference.span.kind": "AGENT", "gen_ai.agent.id": "research-rag-1",
                              "session.id": "oi-sess"}):
        with rec.span("tool", **{"openinference.span.kind": "TOOL", "tool.name": "docs.share",
                                 "tool.parameters": json.dumps({"with": "someone@evil.test"}),
                                 "session.id": "oi-sess"}):
            pass
        with rec.span("llm", **{"openinference.span.kind": "LLM", "input.value": "hi", "output.value": "hello",
                                "llm.provider": "openai"}):
            pass
        with rec.span("retrieve", **{"openinference.span.kind": "RETRIEVER"}):
            pass
    events = {e.kind: e for e in _take(OtlpIngest(), otlp_proto(rec.finished()))}
    tool = events[Kind.tool_call]
    assert tool.tool and tool.tool.name == "docs.share" and tool.tool.arguments == {"with": "someone@evil.test"}
    assert tool.agent.id == "research-rag-1" and tool.session_id == "oi-sess"
    completion, data = events[Kind.completion], events[Kind.data_access]
    assert completion.content and completion.content.output == "hello"
    assert events[Kind.completion].attributes["gen_ai.provider.name"] == "openai"
    assert data.resource and data.resource.type == "data_source"
    assert Kind.agent_invoke in events


def test_genai_operations_mcp_and_older_names_map_onto_the_contract() -> None:
    rec = Recorder(**{"gen_ai.agent.id": "compliance-agent-1"})
    with rec.span("chat gpt", **{"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                                 "gen_ai.conversation.id": "c1"}):
        pass
    with rec.span("retrieval", **{"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb-prod"}):
        pass
    with rec.span("search_memory", **{"gen_ai.operation.name": "search_memory"}):
        pass
    with rec.span("tools/call vault.read", **{"mcp.method.name": "tools/call", "mcp.session.id": "m1",
                                              "gen_ai.tool.call.arguments": '{"path": "vault://prod/db"}'}):
        pass
    with rec.span("resources/read", **{"mcp.method.name": "resources/read", "mcp.resource.uri": "file:///etc/x"}):
        pass
    with rec.tool("kb.lookup", **{"gen_ai.tool.type": "datastore", "gen_ai.data_source.id": "vectors"}):
        pass
    with rec.span("embeddings", **{"gen_ai.operation.name": "embeddings"}), rec.span("GET /", **{"http.x": 1}):
        pass
    events = _take(OtlpIngest(), otlp_proto(rec.finished()))
    kinds = [(e.kind, e.resource.id if e.resource else e.tool.name if e.tool else None) for e in events]
    assert kinds == [(Kind.prompt, None), (Kind.data_access, "kb-prod"), (Kind.data_access, "memory"),
                     (Kind.tool_call, "vault.read"), (Kind.data_access, "file:///etc/x"),
                     (Kind.data_access, "vectors")]
    chat, *_rest = events
    assert chat.attributes["gen_ai.provider.name"] == "openai" and chat.session_id == "c1"
    mcp = events[3]
    assert mcp.session_id == "m1" and mcp.attributes["warden.tool_categories"] == ["secret_store"]
    assert "secret_access" in {f.rule for f in detect(mcp, POLICY, DetectorState())}  # classified by the catalogue


@pytest.mark.parametrize(("raw", "code"), [
    (b"\x0a\xff\xff\xff\xff\x0f\x00", "malformed_protobuf"),
    (b"\x0a\x02\x0a", "malformed_protobuf"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "malformed_otlp"),
    (b'{"resourceSpans": [', "malformed_json"),
    (b"", "empty_message"),
])
def test_bad_messages_are_rejected_with_a_reason(raw: bytes, code: str) -> None:
    [batch] = OtlpIngest().take(raw, key=None, partition=0, offset=0, now=0.0, policy=POLICY)
    assert [r.code for r in batch.decoded.rejections] == [code] and batch.decoded.events == []


def test_an_oversized_batch_is_rejected_whole_with_its_size() -> None:
    rec = Recorder(**{"gen_ai.agent.id": "billing-agent-1"})
    for i in range(200):
        with rec.tool("billing.lookup_invoice", {"invoice": f"INV-{i:04d}", "pad": "x" * 200}):
            pass
    raw = otlp_proto(rec.finished())
    out = decode_spans(raw, 16 * 1024)
    assert [r.code for r in out.rejections] == ["too_large"] and str(len(raw)) in out.rejections[0].detail
    assert len(decode_spans(raw, LIMIT).spans) == 200


def test_a_trace_split_across_partitions_is_counted_and_its_unresolved_spans_say_so() -> None:
    rec = Recorder(**{"service.name": "svc"})
    with rec.span("root"), rec.span("step"), rec.tool("kb.search"):
        pass
    tool, step, _root = rec.finished()
    ingest = OtlpIngest(bounds=Bounds(wait_s=1.0))
    assert _take(ingest, otlp_proto([tool]), partition=0, key=None) == []
    assert _take(ingest, otlp_proto([step]), partition=1, key=None) == []
    assert ingest.resolver.split_spans == 1 and ingest.unkeyed_messages == 2
    [batch] = ingest.release(1.0, POLICY)
    [ev] = batch.decoded.events
    assert "split across partitions" in ev.attributes["warden.agent_resolution"]


def test_the_buffer_is_bounded_evicting_the_oldest_trace_as_unresolved() -> None:
    ingest = OtlpIngest(bounds=Bounds(max_spans=4))
    released = []
    for i in range(6):
        rec = Recorder(**{"service.name": f"svc-{i}"})
        with rec.span("root"), rec.tool("kb.search"):
            pass
        released += _take(ingest, otlp_proto(rec.finished()[:1]), offset=i)
    assert ingest.resolver.remembered == 4 and ingest.resolver.evicted_spans == len(released) == 2
    assert [e.agent.id for e in released] == ["svc-0", "svc-1"]
    assert "evicted" in released[0].attributes["warden.agent_resolution"]
    assert ingest.lowest_held(0) == 2 and ingest.resolver.held == 4


def test_a_span_with_a_bad_id_is_rejected_by_its_index_and_the_others_flow() -> None:
    rec = Recorder(**{"gen_ai.agent.id": "billing-agent-1"})
    for _ in range(3):
        with rec.tool("billing.lookup_invoice"):
            pass
    req = request(rec.finished())
    req.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x01"
    [batch] = OtlpIngest().take(otlp_proto(req), key=b"k", partition=0, offset=0, now=0.0, policy=POLICY)
    assert [(r.code, r.index) for r in batch.decoded.rejections] == [("invalid_span", 1)]
    assert batch.decoded.indices == [0, 2]


def test_replay_reads_otlp_json_lines_resolving_agents_within_each_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from service.cli import main

    rec = Recorder(**{"service.name": "billing-svc"})
    _billing_turn(rec)
    stranger = Recorder(**{"service.name": "mystery-svc"})
    with stranger.span("root"), stranger.tool("kb.search"):
        pass
    lines = tmp_path / "spans.jsonl"
    lines.write_bytes(otlp_json(rec.finished()) + b"\n" + otlp_json(stranger.finished()) + b"\n")
    result = CliRunner().invoke(main, ["replay", str(lines), "--policy", str(BUNDLED_POLICY), "--format",
                                       "otlp_json", "--json"])
    assert result.exit_code == 1, result.output  # findings
    found = [json.loads(x) for x in result.output.splitlines()]
    rules = {(f["rule"], f["agent"]) for f in found if "rule" in f}
    assert ("unapproved_tool", "billing-agent-1") in rules and ("unowned_agent", "mystery-svc") in rules
    [summary] = [x["summary"] for x in found if "summary" in x]
    assert summary["events"] == 4 and summary["invalid"] == 0  # the root span of mystery-svc is no GenAI operation


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_to_events_or_known_reasons_never_an_exception(raw: bytes) -> None:
    for encoding in ("auto", "otlp_proto", "otlp_json"):
        out = decode_message(raw, LIMIT, encoding)
        assert all(r.code in REASON_CODES and r.detail for r in out.rejections)
        assert out.events or out.rejections or raw  # nothing vanishes without a reason... unless it parsed empty
