"""Log lines are JSON objects with the incident and event ids they concern, and never carry a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from service.runtime.logs import configure

PLANTED = "ghp_PLANTEDsecretPLANTEDsecret0123"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_json_lines_carry_ids_and_no_secret(restore_logging: None) -> None:
    out = io.StringIO()
    configure(logging.INFO, "json", out)
    log = logging.getLogger("warden.test")
    log.warning("incident #12: revoke_token step 0 done for event_id=ev-7 with Bearer %s", PLANTED)
    log.info("api refused", extra={"incident_id": 3, "owner": "marco", "detail": f"token={PLANTED}"})
    try:
        raise RuntimeError(f"upstream said token={PLANTED}")
    except RuntimeError:
        log.exception("incident #4: step raised")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["incident_id"], r.get("event_id"), r["level"]) for r in lines] == [
        (12, "ev-7", "warning"), (3, None, "info"), (4, None, "error")]
    assert lines[1]["owner"] == "marco" and lines[0]["logger"] == "warden.test" and lines[0]["ts"].endswith("Z")
    assert "RuntimeError" in lines[2]["exception"]
    assert PLANTED not in out.getvalue()


def test_text_is_still_there_for_terminals(restore_logging: None) -> None:
    out = io.StringIO()
    configure(logging.WARNING, "text", out)
    logging.getLogger("warden.test").warning("incident #1 opened")
    assert out.getvalue().endswith("WARNING warden.test: incident #1 opened\n")


RANDOM_TOKEN = "Zq8XvR2mKp4LwN7tYb3HcJ9s"  # no known prefix: caught only by its entropy


def test_the_alert_line_keeps_its_framework_ids_and_still_loses_a_secret(restore_logging: None) -> None:
    out = io.StringIO()
    configure(logging.WARNING, "json", out)
    logging.getLogger("warden.alert").warning(
        "ALERT [high] incident=#1 rule=unapproved_tool agent=a workflow=w responder=r (R) "
        "frameworks=OWASP-ASI02,OWASP-LLM06,NIST-AI-RMF:MANAGE count=1 evidence: note='k=%s', raw='%s'",
        RANDOM_TOKEN, RANDOM_TOKEN)
    message = json.loads(out.getvalue())["message"]
    assert "frameworks=OWASP-ASI02,OWASP-LLM06,NIST-AI-RMF:MANAGE count=1" in message
    assert RANDOM_TOKEN not in message and "note='k=[REDACTED]', raw='[REDACTED]'" in message


@pytest.mark.parametrize("text", [f"x={RANDOM_TOKEN}", f"a=b={RANDOM_TOKEN}", f"Ab1={RANDOM_TOKEN[:18]}",
                                  "k=CgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn==", "AbCdEf123456==GhIjKl789012=="])
def test_a_name_before_an_equals_sign_does_not_hide_a_token(text: str) -> None:
    from warden.contract.redact import redact_text

    redacted = redact_text(text)
    assert "[REDACTED]" in redacted and RANDOM_TOKEN[:18] not in redacted and "GhIjKl" not in redacted
