"""`warden policy learn --since/--until`: the activity topic read over a window of record time, on a real broker
(Tansu, or Apache Kafka under WARDEN_TEST_KAFKA_BOOTSTRAP, secured too under WARDEN_TEST_KAFKA_SECURITY). The
draft holds exactly the window's tools (a record at --since is in, one at --until is out); a malformed message in
the window is counted and skipped, one outside it is never read as an event; the same window gives the same draft;
an unreachable or silent broker, or a secured one without its settings, is exit 4 within the timeout, naming the
bootstrap; a read that stops short of the window's end drafts nothing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from service.cli import main
from service.cli.times import When, iso, parse_when
from service.runtime.broker import EmbeddedBroker
from service.runtime.topic_window import WindowIncomplete, WindowUnreachable, read_window
from service.runtime.topics import ensure_topics
from tests.conftest import KAFKA_ENV
from tests.support.kafka_security import kafka_access, security_env

HOUR_MS = 3_600_000
PARTITIONS = 3


def learn(*args: str, env: Mapping[str, str | None]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["policy", "learn", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def at(ms: int) -> str:
    """A record time as the ISO-8601 the command reads, to the millisecond."""
    return iso(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))


def call(agent: str, tool: str, n: int) -> dict[str, Any]:
    return {"event_id": f"{agent}-{tool}-{n}", "ts": "2026-11-02T10:00:00Z", "kind": "tool_call",
            "agent": {"id": agent}, "session_id": f"s-{n % 3}", "tool": {"name": tool, "arguments": {"n": n}}}


async def produce_at(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes | None, int]]) -> None:
    """(key, value, record time in ms), in order, through a batching producer (Tansu's ListOffsets counts a batch
    as one record: the reader must not stop inside the newest one)."""
    producer = kafka_access(bootstrap).producer(linger_ms=20, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key, timestamp_ms=ts) for key, value, ts in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def tools_of(draft: Path) -> set[str]:
    learned = yaml.safe_load((draft / "50-learned.yaml").read_text())
    return {tool for workflow in learned["workflows"].values() for tool in workflow["scope"].get("tools", [])}


@pytest.fixture
def topic_env(kafka_bootstrap: str) -> dict[str, str | None]:
    topic = f"learn-{uuid.uuid4().hex[:8]}.activity"
    asyncio.run(ensure_topics(kafka_access(kafka_bootstrap), [topic], PARTITIONS))
    return {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, "WARDEN_TOPIC_ACTIVITY": topic, **security_env()}


@pytest.mark.integration
def test_the_draft_holds_exactly_the_windows_tools_and_the_same_window_gives_the_same_draft(
    kafka_bootstrap: str, topic_env: dict[str, str | None], tmp_path: Path
) -> None:
    topic = str(topic_env["WARDEN_TOPIC_ACTIVITY"])
    now = int(time.time() * 1000)
    since, until = now - 2 * HOUR_MS, now - HOUR_MS
    agents = [f"agent-{i}-{uuid.uuid4().hex[:4]}" for i in range(6)]  # keyed by agent: several partitions

    def rec(agent: str, tool: str, n: int, ts: int) -> tuple[bytes, bytes, int]:
        return agent.encode(), json.dumps(call(agent, tool, n)).encode(), ts

    before = [rec(a, "old.export", n, since - HOUR_MS + n) for n, a in enumerate(agents)]
    inside = [rec(a, tool, n, since + 10 * 60_000 + n) for n, a in enumerate(agents * 3)
              for tool in ("mail.send", "crm.lookup")]
    edges = [rec(agents[0], "edge.at_since", 0, since), rec(agents[1], "edge.at_until", 0, until)]
    after = [rec(a, "late.delete", n, until + 30 * 60_000 + n) for n, a in enumerate(agents)]
    asyncio.run(produce_at(kafka_bootstrap, topic, [*before, edges[0], *inside, edges[1], *after]))

    drafts = []
    for n in range(2):
        out = tmp_path / f"draft{n}"
        code, stdout, stderr = learn("--since", at(since), "--until", at(until), "--out", str(out), "-o", "json",
                                     env=topic_env)
        assert code == 0, (stdout, stderr)
        drafts.append(out)
    assert tools_of(drafts[0]) == {"mail.send", "crm.lookup", "edge.at_since"}
    summary = json.loads(stdout)["summary"]
    in_window = len(inside) + 1
    assert (summary["events"], summary["invalid"], summary["topic"]["records"]) == (in_window, 0, in_window)
    read = summary["topic"]
    assert (read["topic"], read["since_ms"], read["until_ms"]) == (topic, since, until)
    assert [p["partition"] for p in read["partitions"]] == list(range(PARTITIONS))
    # Every record outside the window that was read was skipped by its time, and none of the window was missed.
    assert read["outside"] <= len(before) + len(after) + 1
    if os.environ.get(KAFKA_ENV):  # Apache Kafka seeks by record time: no record outside the window is fetched
        assert all(p["by_time"] and p["before"] == 0 for p in read["partitions"]), read
    texts = [{p.name: p.read_bytes() for p in sorted(d.iterdir())} for d in drafts]
    assert texts[0] == texts[1]
    assert f"from topic {topic} on Kafka {kafka_bootstrap}, records timed {at(since)} .. {at(until)}" in \
        (drafts[0] / "50-learned.yaml").read_text()


@pytest.mark.integration
def test_a_relative_window_and_no_until_read_up_to_the_end_of_the_topic(
    kafka_bootstrap: str, topic_env: dict[str, str | None], tmp_path: Path
) -> None:
    topic = str(topic_env["WARDEN_TOPIC_ACTIVITY"])
    now = int(time.time() * 1000)
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    records = [(agent.encode(), json.dumps(call(agent, tool, n)).encode(), ts)
               for n, (tool, ts) in enumerate([("week.old", now - 8 * 24 * HOUR_MS), ("day.old", now - 20 * HOUR_MS),
                                               ("just.now", now - 1000)])]
    asyncio.run(produce_at(kafka_bootstrap, topic, records))
    out = tmp_path / "d"
    code, stdout, stderr = learn("--since", "1d", "--out", str(out), env=topic_env)
    assert code == 0, (stdout, stderr)
    assert tools_of(out) == {"day.old", "just.now"}
    assert f"read 2 record(s) in the range from {topic}" in stdout
    code, _, stderr = learn("--since", "2h", "--until", "1h", "--out", str(tmp_path / "empty"), env=topic_env)
    assert code == 2 and "no valid event in 0 record(s)" in stderr  # nothing in that window: nothing to draft


@pytest.mark.integration
def test_a_malformed_message_in_the_window_is_counted_and_skipped_and_one_outside_is_not_read(
    kafka_bootstrap: str, topic_env: dict[str, str | None], tmp_path: Path
) -> None:
    topic = str(topic_env["WARDEN_TOPIC_ACTIVITY"])
    now = int(time.time() * 1000)
    since = now - HOUR_MS
    key = b"agent-m"
    records: list[tuple[bytes, bytes | None, int]] = [
        (key, b'{"event_id": "x", "event_id": "y"}', since - 60_000),  # before the window: never decoded
        (key, json.dumps(call("agent-m", "mail.send", 1)).encode(), since + 1000),
        (key, b'{"event_id": "a", "event_id": "b"}', since + 2000),  # duplicate key
        (key, b"\xff\xfe not json", since + 3000),
        (key, None, since + 4000),  # a tombstone: no value
        (key, json.dumps(call("agent-m", "crm.lookup", 2)).encode(), since + 5000),
    ]
    asyncio.run(produce_at(kafka_bootstrap, topic, records))
    out = tmp_path / "d"
    code, stdout, stderr = learn("--since", at(since), "--out", str(out), "-o", "json", env=topic_env)
    assert code == 0, (stdout, stderr)
    doc = json.loads(stdout)
    assert (doc["summary"]["events"], doc["summary"]["invalid"]) == (2, 3)
    reasons = [i["reason"].split(":")[0] for i in doc["invalid"]]
    assert sorted(reasons) == ["duplicate_key", "empty_message", "not_utf8"] or \
        sorted(reasons) == ["duplicate_key", "empty_message", "malformed_json"]
    assert all(i["where"].startswith(f"{topic}@") for i in doc["invalid"])
    assert tools_of(out) == {"mail.send", "crm.lookup"}


@pytest.mark.integration
def test_a_topic_that_does_not_exist_is_exit_2_naming_it(kafka_bootstrap: str, tmp_path: Path) -> None:
    missing = f"learn-{uuid.uuid4().hex[:8]}.nothing"
    env = {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, "WARDEN_TOPIC_ACTIVITY": missing, **security_env()}
    code, _, stderr = learn("--since", "1h", "--out", str(tmp_path / "d"), env=env)
    assert code == 2 and f"no topic {missing}" in stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.integration
@pytest.mark.secured_kafka
def test_on_the_secured_broker_a_wrong_password_or_no_security_is_exit_4_with_the_reason(
    kafka_bootstrap: str, topic_env: dict[str, str | None], tmp_path: Path
) -> None:
    """The reader connects as the workers do: the passing tests above went through TLS and SCRAM here, and without
    them (or with a wrong password) it gets nowhere, and says why in one line, within the timeout."""
    password = "not-the-password-000"
    wrong = {**topic_env, "WARDEN_KAFKA_SASL_PASSWORD_FILE": None, "WARDEN_KAFKA_SASL_PASSWORD": password}
    plaintext = {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, "WARDEN_TOPIC_ACTIVITY": topic_env["WARDEN_TOPIC_ACTIVITY"]}
    for env, reason in ((wrong, "Authentication failed"), (plaintext, "WARDEN_KAFKA_SECURITY_PROTOCOL=PLAINTEXT")):
        started = time.monotonic()
        code, stdout, stderr = learn("--since", "1h", "--kafka-timeout", "5", "--out", str(tmp_path / "d"), env=env)
        assert code == 4 and reason in stderr and f"Kafka at {kafka_bootstrap}" in stderr, stderr
        assert password not in stdout + stderr
        assert time.monotonic() - started < 20
    assert not (tmp_path / "d").exists()


def test_an_unreachable_bootstrap_is_exit_4_at_once_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: connections are refused
        started = time.monotonic()
        code, _, stderr = learn("--since", "1h", "--out", str(tmp_path / "d"),
                                env={"WARDEN_KAFKA_BOOTSTRAP": closed})
    assert code == 4 and f"cannot reach Kafka at {closed}" in stderr and "nothing was drafted" in stderr
    assert time.monotonic() - started < 10
    assert not (tmp_path / "d").exists()


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A loopback port that accepts connections and never answers: a broker that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_broker_that_never_answers_is_exit_4_within_the_timeout(silent_broker: str, tmp_path: Path) -> None:
    started = time.monotonic()
    code, _, stderr = learn("--since", "1h", "--kafka-timeout", "2", "--out", str(tmp_path / "d"),
                            env={"WARDEN_KAFKA_BOOTSTRAP": silent_broker})
    assert code == 4 and f"cannot reach Kafka at {silent_broker}" in stderr, stderr
    assert time.monotonic() - started < 8


def test_a_read_that_stops_short_of_the_window_end_says_so() -> None:
    """The broker goes away in the middle of the window (its own Tansu, stopped after the first record)."""
    with EmbeddedBroker() as broker:
        topic = "learn-cut"
        asyncio.run(ensure_topics(broker.bootstrap, [topic], 1))
        big = json.dumps(call("agent-c", "mail.send", 0) | {"pad": "x" * 900_000}).encode()
        now = int(time.time() * 1000)
        asyncio.run(produce_at(broker.bootstrap, topic, [(b"agent-c", big, now - 1000 + n) for n in range(24)]))
        seen: list[int] = []

        def first_then_stop(record: Any) -> None:
            seen.append(record.offset)
            if len(seen) == 1:
                broker.stop()

        with pytest.raises((WindowIncomplete, WindowUnreachable)) as failed:
            asyncio.run(read_window(broker.bootstrap, topic, now - 60_000, None, first_then_stop, timeout_s=2))
    assert 1 <= len(seen) < 24
    if isinstance(failed.value, WindowIncomplete):
        [part] = failed.value.read.partitions
        assert part.records == len(seen) and part.end == 24
        assert f"reading stopped at offset {len(seen)} of 24" in str(failed.value)


def test_since_and_until_are_checked_before_anything_is_read(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps(call("a", "mail.send", 0)) + "\n")
    env: dict[str, str | None] = {"WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    out = str(tmp_path / "d")
    cases = {
        "not both": [str(events), "--since", "1h"],
        "--until needs --since": ["--until", "1h"],
        "give EVENTS": [],
        "is not after --since": ["--since", "1h", "--until", "2h"],
        "is in the future": ["--since", (datetime.now(UTC) + timedelta(days=1)).date().isoformat()],
        "the activity topic holds native events": ["--since", "1h", "--format", "otlp_json"],
        "is neither ISO-8601": ["--since", "yesterday"],
        "not a duration": ["--since", "3y"],
    }
    for expected, args in cases.items():
        code, _, stderr = learn(*args, "--out", out, env=env)
        assert code == 2 and expected in stderr, (args, stderr)
    code, _, stderr = learn("--since", "1h", "--out", out, env={"WARDEN_KAFKA_BOOTSTRAP": None})
    assert code == 2 and "set WARDEN_KAFKA_BOOTSTRAP" in stderr


def test_times_are_iso_8601_in_utc_or_a_duration_before_now() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_when("24h", now) == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert parse_when("7d", now) == datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert parse_when("2026-11-02", now) == datetime(2026, 11, 2, tzinfo=UTC)
    assert parse_when("2026-11-02T10:00:00+02:00", now) == datetime(2026, 11, 2, 8, tzinfo=UTC)
    assert parse_when("2026-11-02T10:00:00.250Z", now) == datetime(2026, 11, 2, 10, 0, 0, 250_000, tzinfo=UTC)
    assert at(1_796_666_577_490) == "2026-12-07T18:02:57.490Z"


def test_the_times_of_one_invocation_share_one_now_and_the_next_invocation_has_its_own() -> None:
    when = When()  # made once, at import, as the option's type is
    with click.Context(click.Command("learn")) as ctx:
        since, until = when.convert("2h", None, ctx), when.convert("1h", None, ctx)
    assert until - since == timedelta(hours=1)
    time.sleep(0.01)
    with click.Context(click.Command("learn")) as later:
        assert when.convert("1h", None, later) > until
