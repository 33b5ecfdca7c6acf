#!/usr/bin/env bash
# Mutation testing of the pure core with pytest-gremlins: each mutant ("gremlin") runs only the fast pure tests
# that cover its line (no broker, no PostgreSQL: the ledger's tests run on SQLite only), one worker at a time.
# See docs/testing.md.
#
#   bench/mutation.sh                      # the whole pure core
#   bench/mutation.sh responders/incidents.py warden/policy/lint.py   # some of it
#   bench/mutation.sh --effects playbooks/ledger.py   # one effectful module, with the tests that exercise it
#   bench/mutation.sh --effects list                  # the effectful modules it knows
#
# --effects runs one module that has effects (a database, a broker, the local Slack API) with the test files in
# EFFECTS below, integration ones included: tests/conftest.py starts Tansu, PostgreSQL and the local Slack API for
# the tests that need them, in each gremlin's test process. One module at a time; a module's whole test files are
# given, and pytest-gremlins still runs only the tests that cover each gremlin's line. Extra pytest arguments
# (e.g. `-k NAME`, to split a long run by tests) follow the module: `bench/mutation.sh --effects MODULE -k name`.
# With WARDEN_TEST_KAFKA_BOOTSTRAP set (tests/support/kafka/apache_kafka.sh start), the broker tests run against that
# Apache Kafka instead of Tansu: the state rebuild's seek by time is a branch only Apache Kafka takes.
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
# module -> the test files that exercise it (integration ones included), for --effects: the module's own tests,
# chosen so that a run takes minutes, not hours. Not here: the tests that start a worker as a subprocess
# (test_containment_crash.py, test_containment_worker.py, test_hostile_worker.py): the mutated code lives only in the
# test process, so they cannot kill a gremlin; and the whole-responder files (test_incident_responder.py and its
# kin), whose real timers make each gremlin's run minutes long: the rooms and the stages have their own tests.
declare -A EFFECTS=(
  [playbooks/ledger.py]="tests/integration/test_containment.py tests/integration/test_ledger_locks.py"
  [playbooks/actions]="tests/unit/playbooks/test_action_records.py tests/integration/test_action_answers.py
                       tests/integration/test_action_webhook.py tests/integration/test_action_revoke_token.py"
  [service/runtime/state_rebuild.py]="tests/unit/service/test_partition_state_rules.py
                                      tests/unit/streams/test_detector_state.py tests/integration/test_state_rebuild.py"
  [responders/outbox/stages.py]="tests/unit/responders/test_outbox_pipeline.py tests/unit/responders/test_incidents.py"
  # The store's rooms and the desk's asks: each room's own tests (fast, a fresh database per test).
  [responders/store/claims.py]="tests/integration/test_store_claims.py"
  [responders/store/escalation.py]="tests/integration/test_store_escalation.py"
  [responders/store/timeline.py]="tests/integration/test_store_timeline.py"
  [responders/store/decisions.py]="tests/integration/test_store_decisions.py"
  [responders/store/security.py]="tests/integration/test_store_security.py"
  [responders/store/incidents.py]="tests/integration/test_store_incidents.py"
  [responders/store/outbox.py]="tests/integration/test_store_outbox.py tests/integration/test_store_claims.py"
  [responders/store/approval_asks.py]="tests/integration/test_store_outbox.py tests/integration/test_store_claims.py"
  [responders/approvals/desk.py]="tests/integration/test_approvals.py tests/integration/test_approval_desk_rules.py"
)
if [ "${1:-}" = "--effects" ]; then
  module=${2:?"usage: bench/mutation.sh --effects MODULE [pytest args...] (bench/mutation.sh --effects list)"}
  if [ "$module" = list ]; then
    for m in "${!EFFECTS[@]}"; do echo "$m: ${EFFECTS[$m]}" | tr -s ' \n' ' '; echo; done | sort
    exit 0
  fi
  [ -n "${EFFECTS[$module]:-}" ] || { echo "unknown effectful module: $module (bench/mutation.sh --effects list)" >&2; exit 2; }
  shift 2
  read -r -a files <<< "$(echo ${EFFECTS[$module]})"
  start=$(date +%s)
  # Integration tests start their own broker and database per test process: a longer limit per gremlin's run.
  # SQLite only unless ALL_BACKENDS=1 (a PostgreSQL-only kill is listed in bench/mutation_killed_elsewhere.txt).
  backends=(-k "not postgresql"); [ "${ALL_BACKENDS:-}" = 1 ] && backends=()
  "$PY" -m pytest -q -p no:cacheprovider "${files[@]}" "${backends[@]}" "$@" \
      --gremlins --gremlin-targets="$module" --gremlin-workers="${WORKERS:-1}" \
      --gremlin-mutant-timeout="${MUTANT_TIMEOUT:-300}" \
      --gremlin-batch --gremlin-report=console,json
  echo "mutation run took $(( $(date +%s) - start ))s"
  "$PY" bench/mutation_summary.py coverage/gremlins/gremlins.json
  exit 0
fi
start=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider -m "not integration" -k "not postgresql" "${TESTS[@]}" \
    --gremlins --gremlin-targets="$(IFS=,; echo "${TARGETS[*]}")" --gremlin-workers="${WORKERS:-1}" \
    --gremlin-batch --gremlin-report=console,json
echo "mutation run took $(( $(date +%s) - start ))s"
"$PY" bench/mutation_summary.py coverage/gremlins/gremlins.json
