"""`warden dlq replay` as an operator runs it: reasons checked against the codes dead letters carry, a letter not
replayed never moves the group past it, a dry run says "would replay", no seal key is a refusal, not a new key."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner
from cryptography.fernet import Fernet

from service.cli import main
from service.cli.dlq import KNOWN_REASONS, REPLAYED_FROM
from service.runtime.topics import ensure_topics
from tests.support.kafka_helpers import committed_offsets, read_topic
from warden.kit.sealing import Sealer

REPO = Path(__file__).resolve().parents[2]
KEY = Fernet.generate_key().decode()


def dlq(*args: str, env: Mapping[str, str | None]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["dlq", "replay", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_a_reason_typo_is_exit_2_naming_the_nearest_code_before_anything_is_read(tmp_path: Path) -> None:
    env = {"WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "WARDEN_SEAL_KEY": KEY, "WARDEN_DATA_DIR": str(tmp_path)}
    code, out, err = dlq("--reason", "malformed_jsn", env=env)
    assert code == 2 and out == "" and "did you mean malformed_json" in err


def test_every_reason_code_the_code_writes_is_known_to_dlq_replay() -> None:
    sources = [*(REPO / "streams" / "ingest").glob("*.py"), REPO / "service" / "runtime" / "app.py",
               *(REPO / "service" / "runtime" / "ingest").glob("*.py")]
    code = "\n".join(path.read_text() for path in sources)
    written = set(re.findall(r'Rejection\(\s*"([a-z_]+)"', code)) | set(
        re.findall(r'dead_letter\(\s*\w+,\s*"([a-z_]+)"', code))
    assert written and written <= KNOWN_REASONS


def test_without_a_seal_key_it_refuses_and_generates_none(tmp_path: Path) -> None:
    env = {"WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "WARDEN_SEAL_KEY": None, "WARDEN_DATA_DIR": str(tmp_path / "d")}
    code, out, err = dlq(env=env)
    assert code == 2 and out == "" and "set WARDEN_SEAL_KEY" in err and "nothing was read" in err
    assert not (tmp_path / "d").exists()


def test_an_unreadable_key_file_is_one_line_and_exit_4(tmp_path: Path) -> None:
    (tmp_path / "seal.key").mkdir()  # unreadable as a file, whoever runs the test (root reads any mode)
    env = {"WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "WARDEN_SEAL_KEY": None, "WARDEN_DATA_DIR": str(tmp_path)}
    code, out, err = dlq(env=env)
    assert code == 4 and out == "" and err.startswith(f"warden: cannot reach the seal key file {tmp_path}/seal.key: ")
    assert err.count("\n") == 1


def test_an_unreachable_broker_is_one_line_and_exit_4(tmp_path: Path) -> None:
    env = {"WARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "WARDEN_SEAL_KEY": KEY, "WARDEN_DATA_DIR": str(tmp_path)}
    code, out, err = dlq(env=env)
    assert code == 4 and out == "" and err.startswith("warden: cannot reach Kafka at 127.0.0.1:1: ")
    assert err.count("\n") == 1 and KEY not in err


async def _dead_letters(bootstrap: str, topic: str, letters: list[tuple[str, bytes]]) -> None:
    """Sealed dead letters as a worker writes them, all on one partition (one key), in order."""
    sealer = Sealer(KEY)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for reason, value in letters:
            await (await producer.send(topic, sealer.seal_bytes(value), key=b"billing-agent-1", partition=0, headers=[
                ("warden.reason_code", reason.encode()), ("warden.sealed", b"fernet")]))
    finally:
        await producer.stop()


@pytest.mark.integration
def test_a_letter_not_replayed_never_moves_the_group_past_it(kafka_bootstrap: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = {"WARDEN_TOPIC_DLQ": f"d{suffix}.dlq", "WARDEN_TOPIC_ACTIVITY": f"d{suffix}.activity"}
    env = {"WARDEN_KAFKA_BOOTSTRAP": kafka_bootstrap, "WARDEN_SEAL_KEY": KEY, "WARDEN_DATA_DIR": str(tmp_path),
           "WARDEN_APP_ID": f"d{suffix}", "WARDEN_KAFKA_SESSION_TIMEOUT_S": "6",
           "WARDEN_KAFKA_HEARTBEAT_INTERVAL_S": "1", "WARDEN_KAFKA_REBALANCE_TIMEOUT_S": "3", **topics}
    letters = [("malformed_json", b'{"event_id": "m1"'), ("unknown_kind", b'{"event_id": "u1"}'),
               ("malformed_json", b'{"event_id": "m2"')]
    # Made first, as the workers do: Apache Kafka (as users run it) creates no topic on a first produce.
    asyncio.run(ensure_topics(kafka_bootstrap, list(topics.values()), 1))
    asyncio.run(_dead_letters(kafka_bootstrap, topics["WARDEN_TOPIC_DLQ"], letters))
    group = f"d{suffix}.dlq-replay"

    def committed() -> dict[int, int]:
        return asyncio.run(committed_offsets(kafka_bootstrap, group, topics["WARDEN_TOPIC_DLQ"]))

    code, out, _ = dlq("--dry-run", "--idle", "1", env=env)
    activity = topics["WARDEN_TOPIC_ACTIVITY"]
    assert code == 0 and out.splitlines()[0].endswith(f"malformed_json: would replay to {activity}")
    assert "3 would be replayed" in out and committed() == {}

    code, out, _ = dlq("--reason", "malformed_json", "--idle", "1", "-o", "jsonl", env=env)
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 1  # one letter was held
    assert [(r["offset"], r["action"]) for r in rows[:-1]] == [(0, "replayed"), (1, "held")]
    assert rows[-1]["summary"]["replayed"] == 1 and rows[-1]["summary"]["held"] == 1
    assert committed() == {0: 1}, "the group stays on the held letter"

    monkeypatch.setattr(sys.modules["service.cli.dlq"], "PROGRESS_EVERY", 1)  # progress on every letter
    code, out, err = dlq("--idle", "1", env=env)
    assert code == 0 and "2 replayed, 0 held" in out
    assert err.splitlines() == ["warden: dlq replay: 1 read, 1 replayed", "warden: dlq replay: 2 read, 2 replayed"]
    assert committed() == {0: 3}
    replayed = asyncio.run(read_topic(kafka_bootstrap, topics["WARDEN_TOPIC_ACTIVITY"], expect=3))
    origins = sorted(dict(r.headers)[REPLAYED_FROM].decode() for r in replayed)
    assert origins == [f"{topics['WARDEN_TOPIC_DLQ']}@0:{n}" for n in range(3)], "each letter replayed once"
