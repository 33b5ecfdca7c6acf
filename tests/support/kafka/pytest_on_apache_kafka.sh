#!/usr/bin/env bash
# Run every broker test against Apache Kafka: fetch it from Maven Central (cached), start one KRaft node on free
# ports, point the suite at it with WARDEN_TEST_KAFKA_BOOTSTRAP, stop it at the end. Needs Java 17 and Maven.
# Extra arguments go to pytest (after `-n 4 --dist worksteal`). A Kafka that does not start fails the run with the reason; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/../../.."
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is required to run Apache Kafka" >&2; exit 1; }
done
kafka_dir=$(mktemp -d)
trap 'tests/support/kafka/apache_kafka.sh stop "$kafka_dir" || true; rm -rf "$kafka_dir"' EXIT
t0=$SECONDS
tests/support/kafka/apache_kafka.sh fetch >/dev/null
t1=$SECONDS
bootstrap=$(tests/support/kafka/apache_kafka.sh start "$kafka_dir" | tail -n 1)
echo "Apache Kafka at $bootstrap (fetched in $((t1 - t0))s, started in $((SECONDS - t1))s)"
# Four pytest-xdist workers share the one Kafka (each test has its own topics and group ids; each worker starts its
# own PostgreSQL); extra arguments come after, so `-n 0` runs them in one process again.
WARDEN_TEST_KAFKA_BOOTSTRAP="$bootstrap" .venv/bin/pytest -q -p no:cacheprovider -n 4 --dist worksteal \
  -m "integration or apache_kafka" "$@"
