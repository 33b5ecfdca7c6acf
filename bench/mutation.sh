#!/usr/bin/env bash
# Mutation testing of the pure core with pytest-gremlins: each mutant ("gremlin") runs only the fast pure tests
# that cover its line (no broker, no PostgreSQL: the ledger's tests run on SQLite only), one worker at a time.
# See docs/testing.md.
#
#   bench/mutation.sh                      # the whole pure core
#   bench/mutation.sh responders/incidents.py warden/policy/lint.py   # some of it
#
# Prints the console report; the per-gremlin results land in coverage/gremlins/gremlins.json, and
# bench/mutation_summary.py turns them into the per-module table that docs/testing.md records, leaving out the
# equivalent gremlins listed (each with its reason) in bench/mutation_equivalents.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TARGETS=(streams/ingest streams/detectors warden/contract/redact.py responders/incidents.py
         warden/policy/loader.py warden/policy/lint.py warden/policy/lint_scope.py warden/policy/arguments.py
         warden/policy/scope_checks.py warden/policy/tools.py warden/policy/containment.py playbooks/ledger.py)
[ $# -gt 0 ] && TARGETS=("$@")
# The pure tests of those modules: no test here starts a broker or PostgreSQL (integration ones are deselected,
# and so are the PostgreSQL runs of the ledger's tests, which keep their SQLite runs).
TESTS=(tests/unit/streams/test_ingest.py tests/unit/streams/test_detectors.py tests/unit/streams/test_detector_edges.py tests/unit/warden/test_custom_rules.py
       tests/unit/streams/test_detector_state.py tests/unit/warden/test_catalogue.py
       tests/unit/warden/test_redact.py tests/unit/responders/test_incidents.py tests/unit/warden/test_policy_load.py tests/unit/warden/test_policy_lint.py
       tests/unit/warden/test_argument_scope.py tests/unit/streams/test_flows.py tests/unit/streams/test_sessions.py tests/unit/warden/test_scope_lint.py
       tests/integration/test_containment.py)
start=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider -m "not integration" -k "not postgresql" "${TESTS[@]}" \
    --gremlins --gremlin-targets="$(IFS=,; echo "${TARGETS[*]}")" --gremlin-workers="${WORKERS:-1}" \
    --gremlin-batch --gremlin-report=console,json
echo "mutation run took $(( $(date +%s) - start ))s"
"$PY" bench/mutation_summary.py coverage/gremlins/gremlins.json
