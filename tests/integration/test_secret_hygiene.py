"""A distinct secret planted in every field and form Warden reads must appear in nothing Warden writes: Slack
request bodies, any database table (read as bytes), the findings topic, the DLQ (sealed), /metrics, the log."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from service.demo.slack_api_server import SlackApiServer
from service.runtime.settings import BUNDLED_POLICY, Settings
from service.runtime.worker import Runtime
from tests.conftest import SLACK_SIGNING_SECRET, SLACK_TOKEN
from tests.support.incident_helpers import eventually
from tests.support.kafka_helpers import event, headers, produce, read_topic

pytestmark = pytest.mark.integration

# One distinct, plain-looking secret per field and form: lower case and digits only, so no token shape or
# entropy check can find them; only structure (keys, JSON inside strings, header lines) can.
SECRETS = {
    "argument": "plantedargument0001",
    "nested_json": "plantednestedjson0002",
    "nested_twice": "plantednestedtwice0003",
    "authorization_header": "plantedbasicauth0004",
    "cookie_header": "plantedcookie0005",
    "api_key_header": "plantedapikeyheader0006",
    "prompt": "plantedprompt0007",
    "output": "plantedoutput0008",
    "credential": "plantedcredential0009",
    "dlq_token": "planteddlqtoken0010",
    "dlq_argument": "planteddlqargument0011",
    "passphrase": "plantedpassphrase0012",
    "tool_result": "plantedtoolresult0013",
    "tool_result_text": "plantedresulttext0014",
    "provenance_result": "plantedprovenance0015",  # plain text in a read that provenance traces: only fingerprinted
}
S = SECRETS
TEMPLATE_RULES = """
rules:
  custom:
    - id: echo-prompt
      condition: event.kind == "prompt" && has(event.content)
      severity: high
      output: "Prompt ${event.content.prompt} answered ${event.content.output}"
    - id: echo-arguments
      condition: event.kind == "tool_call" && event.tool.name == "shell.exec"
      severity: high
      output: "Arguments ${event.tool.arguments}"
    - id: echo-result
      condition: event.kind == "tool_call" && event.tool.name in ["web.fetch", "files.read"] && has(event.tool.result)
      severity: high
      output: "Result ${event.tool.result}"
"""


def _policy(tmp_path: Path) -> Path:
    folder = tmp_path / "policy"
    shutil.copytree(BUNDLED_POLICY, folder)
    (folder / "90-echo-rules.yaml").write_text(TEMPLATE_RULES)
    return folder


def _events() -> list[dict[str, object]]:
    arguments = {
        "api_key": S["argument"],
        "config": json.dumps({"db": {"password": S["nested_json"]},
                              "inner": json.dumps({"private_key": S["nested_twice"]})}),
        "request": f"GET / HTTP/1.1\nAuthorization: Basic {S['authorization_header']}\n"
                   f"Cookie: session={S['cookie_header']}\nX-Api-Key: {S['api_key_header']}\n",
        "Passphrase": S["passphrase"],
    }
    return [
        event("support-bot-2", tool={"name": "shell.exec", "arguments": arguments}),
        event("support-bot-2", tool={"name": "web.fetch", "arguments": {"url": "https://example.test"},
                                     "result": {"page": "hello", "credentials": {"token": S["tool_result"]}}}),
        event("support-bot-2", tool={"name": "files.read", "arguments": {"path": "notes.txt"},
                                     "result": f"notes\nAuthorization: Bearer {S['tool_result_text']}\n"}),
        event("billing-agent-1", kind="prompt", session_id="sess-secret",
              content={"prompt": "Pay the March invoice from acme-logistics."}),
        event("billing-agent-1", session_id="sess-secret", tool={
            "name": "mail.read_inbox", "arguments": {"folder": "invoices"},
            "result": f"New bank details: GB33 BUKB 2020 1555 5555 55. Portal code {S['provenance_result']}."}),
        event("billing-agent-1", session_id="sess-secret", tool={
            "name": "billing.pay_vendor",
            "arguments": {"payee": "acme-logistics", "amount": 100, "iban": "GB33BUKB20201555555555"}}),
        event("support-bot-1", kind="prompt", content={"prompt": f"use pwd={S['prompt']} to log in",
                                                       "output": f'{{"auth": "{S["output"]}"}}'}),
        event("billing-agent-1", kind="secret_access", resource={"type": "secret", "id": "vault://prod/root"},
              credential={"id": "kid-9", "token": S["credential"]}),
    ]


def _leaks(where: str, data: bytes | str) -> list[str]:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return [f"{name} in {where}" for name, secret in SECRETS.items() if secret in text]


async def test_no_planted_secret_leaves_warden_in_clear(
    worker_settings: Settings, slack_api: SlackApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="warden")
    settings = worker_settings.model_copy(update={
        "policy": _policy(tmp_path), "slack_token": SecretStr(SLACK_TOKEN), "slack_api_url": slack_api.base_url,
        "slack_signing_secret": SecretStr(SLACK_SIGNING_SECRET), "outbox_poll_s": 0.1,
    })
    invalid = event("billing-agent-1", kind="secret_access", ts="not a time", resource={"type": "secret", "id": "x"},
                    credential={"token": S["dlq_token"]}, tool={"name": "x", "arguments": {"k": S["dlq_argument"]}})
    async with Runtime(settings) as rt:
        messages = [(e["agent"]["id"].encode(), json.dumps(e).encode()) for e in _events()]  # type: ignore[index]
        await produce(rt.bootstrap, settings.topic_activity, [*messages, (b"billing-agent-1",
                                                                          json.dumps(invalid).encode())])
        wanted = {"unapproved_tool", "echo-arguments", "echo-prompt", "secret_access", "echo-result", "provenance"}
        findings = await read_topic(rt.bootstrap, settings.topic_findings, what="every planted finding",
                                    until=lambda got: wanted <= {json.loads(f.value)["rule"] for f in got})
        await eventually(lambda: len(slack_api.roots()) >= 3, timeout=60, what="the incidents on Slack")
        dlq = await read_topic(rt.bootstrap, settings.topic_dlq, expect=1)
        assert rt.web is not None
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{rt.web.port}/metrics") as response:
            served_metrics = await response.text()
    db_file = settings.data_dir / "warden.db"
    with sqlite3.connect(db_file) as db:
        tables = [name for (name,) in db.execute("select name from sqlite_master where type = 'table'")]
        rows = {t: repr(db.execute(f'select * from "{t}"').fetchall()).encode() for t in tables}
    assert {"incidents", "notifications"} <= set(tables) or len(tables) > 2

    leaks = _leaks("slack request bodies", slack_api.bodies())
    leaks += [leak for name, data in rows.items() for leak in _leaks(f"table {name}", data)]
    leaks += [leak for path in settings.data_dir.glob("warden.db*") for leak in _leaks(path.name, path.read_bytes())]
    leaks += [leak for f in findings for leak in _leaks("findings topic", f.value)]
    leaks += [leak for d in dlq for leak in _leaks("dlq value", d.value) + _leaks("dlq headers", repr(d.headers))]
    leaks += _leaks("/metrics", served_metrics)
    leaks += _leaks("log", "\n".join(r.getMessage() for r in caplog.records))
    assert leaks == [], leaks
    assert headers(dlq[0])["warden.sealed"] == "fernet"
    assert S["dlq_token"].encode() in settings.sealer().open_bytes(dlq[0].value), "sealed, not lost: replayable"
