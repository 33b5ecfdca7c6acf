"""Unknown WARDEN_* environment variables stop start-up: a misspelled WARDEN_KAFKA_BOOTSTRAP used to start a toy
broker silently, and any other misspelling quietly kept a default. The message names the nearest known variable."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path

from service.runtime.settings import BUNDLED_POLICY, Settings

PREFIX = "WARDEN_"
# Read by Warden's tools, not by the worker's settings: the CLI's incident API client (docs/cli.md), the test suite
# and benchmarks (WARDEN_TEST_*, WARDEN_BENCH_*), the OAuth test server launcher and the Apache Kafka starter of
# tests/support/kafka/, and the Collector builder of tests/support/otel/.
TOOL_PREFIXES = ("WARDEN_TEST_", "WARDEN_BENCH_")
TOOL_VARIABLES = frozenset({"WARDEN_API_URL", "WARDEN_API_TOKEN",
                            "WARDEN_OAUTH_CACHE", "WARDEN_OAUTH_CONFIG", "WARDEN_OAUTH_PORT", "WARDEN_OAUTH_HOST",
                            "WARDEN_KAFKA_CACHE", "WARDEN_KAFKA_START_TIMEOUT", "WARDEN_KAFKA_JAVA_OPTS",
                            "WARDEN_DOCS_SCREENSHOT", "WARDEN_DEMO_IDP_CLIENT_SECRET",
                            "WARDEN_OTELCOL_CACHE", "WARDEN_GO"})
_ENV_REF = re.compile(r"\benv:(WARDEN_[A-Z0-9_]+)")


def setting_variables() -> frozenset[str]:
    return frozenset(PREFIX + name.upper() for name in Settings.model_fields)


def policy_variables(policy: Path) -> frozenset[str]:
    """Variables the policy names as secret references (`env:WARDEN_...`): the operator's, not Warden's."""
    files = sorted(policy.rglob("*.y*ml")) if policy.is_dir() else [policy]
    found: set[str] = set()
    for path in files:
        try:
            found.update(_ENV_REF.findall(path.read_text(errors="replace")))
        except OSError:
            continue  # the policy loader reports an unreadable policy with its own located error
    return frozenset(found)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One message per WARDEN_* variable that nothing reads, naming the nearest setting."""
    known = setting_variables()
    policy = Path(environ.get("WARDEN_POLICY") or BUNDLED_POLICY)
    candidates = [name for name in environ if name.startswith(PREFIX) and name not in known
                  and name not in TOOL_VARIABLES and not name.startswith(TOOL_PREFIXES)]
    if not candidates:
        return []
    referenced = policy_variables(policy)
    messages = []
    for name in sorted(set(candidates) - referenced):
        nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {nearest[0]}?" if nearest else "see the Configuration table in README.md"
        messages.append(f"{name}: not a Warden setting ({hint})")
    return messages
