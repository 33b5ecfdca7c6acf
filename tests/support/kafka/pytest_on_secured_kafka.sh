#!/usr/bin/env bash
# The broker tests once more against an Apache Kafka whose only client listener is SASL_SSL (SCRAM-SHA-512, TLS
# from a CA made for this run by tests/support/kafka/secured_material.py): a Kafka client of Warden made without the
# settings' security cannot connect at all, so a test that passes here went through KafkaAccess.
# Runs the secured_kafka tests (wrong password, untrusted certificate, the CLI's clients) and the integration
# files below, which run whole workers (faust, batch ingest, producers, admin, lag, control, approvals, containment)
# and read back through tests/support/kafka_helpers.py, and `warden policy learn --since/--until`'s topic reader. Extra
# arguments go to pytest. Needs Java 17 and Maven.
set -euo pipefail
cd "$(dirname "$0")/../../.."
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is required to run Apache Kafka" >&2; exit 1; }
done
kafka_dir=$(mktemp -d)
trap 'tests/support/kafka/apache_kafka.sh stop "$kafka_dir" || true; rm -rf "$kafka_dir"' EXIT
.venv/bin/python tests/support/kafka/secured_material.py "$kafka_dir"
t0=$SECONDS
bootstrap=$(tests/support/kafka/apache_kafka.sh start-secured "$kafka_dir" | tail -n 1)
echo "Apache Kafka (SASL_SSL, SCRAM-SHA-512) at $bootstrap, started in $((SECONDS - t0))s"
WARDEN_TEST_KAFKA_BOOTSTRAP="$bootstrap" WARDEN_TEST_KAFKA_SECURITY="$kafka_dir/client.json" \
  .venv/bin/pytest -q -p no:cacheprovider -n 4 --dist worksteal \
  -m "secured_kafka or integration or apache_kafka" \
  tests/integration/test_kafka_security.py tests/integration/test_spine.py tests/integration/test_containment_worker.py tests/integration/test_incident_worker.py \
  tests/integration/test_readiness.py tests/integration/test_policy_learn_topic.py \
  "$@"
