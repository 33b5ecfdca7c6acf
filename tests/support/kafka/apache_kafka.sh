#!/usr/bin/env bash
# A real Apache Kafka 4.x broker (single-node KRaft, broker+controller) on 127.0.0.1, for
# running the suite against Kafka itself rather than the embedded Tansu broker:
#
#   bootstrap=$(tests/support/kafka/apache_kafka.sh start "$dir" | tail -n 1)
#   WARDEN_TEST_KAFKA_BOOTSTRAP=$bootstrap pytest ...
#   tests/support/kafka/apache_kafka.sh stop "$dir"
#
# Why it exists: the workplace has no Docker and reaches no download site, only package
# registries, so the broker's jars come from Maven Central through Maven (tests/support/kafka/pom.xml)
# and run straight from a class path, with no Kafka tarball and none of its bin/ scripts.
#
#   start DIR  fetch the jars if needed, write DIR/server.properties, format DIR/data, start
#              the broker (output in DIR/kafka.log, pid in DIR/kafka.pid), wait until it serves
#              metadata, print its bootstrap "127.0.0.1:PORT" as the last line of stdout.
#              Every start is a fresh, empty cluster: an old DIR/data is wiped.
#   start-secured DIR
#              the same, with the clients' listener SASL_SSL only (SCRAM-SHA-256/512 users, TLS from a PEM
#              keystore): DIR/tls/server.pem, DIR/tls/ca.pem and DIR/users must exist (tests/support/kafka/secured_material.py
#              makes them). The broker's own traffic uses a loopback PLAINTEXT listener no client is given.
#   stop DIR   SIGTERM, up to 30 s, then SIGKILL; safe to call twice or on a DIR never started.
#   fetch      only resolve the jars into the cache (prints the cache's path).
#
# Environment: WARDEN_KAFKA_CACHE (jar cache; default ~/.cache/warden/kafka-VERSION, outside
# the repository), WARDEN_KAFKA_START_TIMEOUT (seconds, default 90), WARDEN_KAFKA_JAVA_OPTS
# (default "-Xmx512m -Xms256m"). Everything but the bootstrap line goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$HERE/pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM" | head -n 1)
[ -n "$KAFKA_VERSION" ] || { echo "apache_kafka.sh: no <kafka.version> in $POM" >&2; exit 1; }
CACHE="${WARDEN_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warden/kafka-$KAFKA_VERSION}"
START_TIMEOUT="${WARDEN_KAFKA_START_TIMEOUT:-90}"
JAVA_OPTS="${WARDEN_KAFKA_JAVA_OPTS:--Xmx512m -Xms256m}"

log() { echo "apache_kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  echo "usage: $0 start DIR | start-secured DIR | stop DIR | fetch" >&2
  exit 2
}

# The cache is complete when its stamp names this pom's exact content; a changed pom refetches.
pom_stamp() { sha256sum "$POM" | cut -d' ' -f1; }

fetch() {
  local stamp tmp
  stamp=$(pom_stamp)
  if [ -f "$CACHE/.complete" ] && [ "$(cat "$CACHE/.complete")" = "$stamp" ]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn is not installed (apt-get install maven)"
  mkdir -p "$(dirname "$CACHE")"
  tmp=$(mktemp -d "$CACHE.partial.XXXXXX")
  log "resolving Kafka $KAFKA_VERSION jars from Maven Central into $CACHE"
  if ! mvn -B -q -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$tmp.mvn.log" 2>&1; then
    cat "$tmp.mvn.log" >&2
    rm -rf "$tmp" "$tmp.mvn.log"
    die "mvn could not resolve $POM"
  fi
  rm -f "$tmp.mvn.log"
  ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"; }
  echo "$stamp" >"$tmp/.complete"
  # Swap in whole, so a concurrent or interrupted run never leaves a half-filled cache in place.
  rm -rf "$CACHE"
  mv -T "$tmp" "$CACHE" 2>/dev/null || rm -rf "$tmp"  # lost a race to another fetch: theirs is as good
  [ -f "$CACHE/.complete" ] || die "cache $CACHE is incomplete"
}

free_ports() {  # three distinct free loopback ports, on one line
  python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
EOF
}

# Exit 0 once the broker on $1:$2 answers a Metadata request listing itself, i.e. it has
# registered with the controller and is unfenced: topics can be created and written.
probe() {
  python3 - "$1" "$2" <<'EOF' 2>/dev/null
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
client = b"apache_kafka.sh"
# Metadata v1 (api key 3): header(api_key, api_version, correlation_id, client_id), topics = [] (none).
req = struct.pack(">hhih", 3, 1, 7, len(client)) + client + struct.pack(">i", 0)
with socket.create_connection((host, port), timeout=3) as s:
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(req)) + req)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    data = read(struct.unpack(">i", read(4))[0])
corr, count = struct.unpack_from(">ii", data, 0)
off, ports = 8, []
for _ in range(count):
    _node, hlen = struct.unpack_from(">ih", data, off)
    off += 6 + hlen
    ports.append(struct.unpack_from(">i", data, off)[0])
    rlen = struct.unpack_from(">h", data, off + 4)[0]
    off += 6 + max(rlen, 0)
sys.exit(0 if corr == 7 and port in ports else 1)
EOF
}

# The pid in DIR/kafka.pid, if that process is alive and is this DIR's broker (not a reused pid).
running_pid() {
  local dir=$1 pid
  [ -f "$dir/kafka.pid" ] || return 1
  pid=$(cat "$dir/kafka.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "kafka.Kafka $dir/server.properties" || return 1
  echo "$pid"
}

stop() {
  local dir pid
  dir=$(cd "$1" 2>/dev/null && pwd) || { log "no directory $1: nothing to stop"; return 0; }
  rm -f "$dir/bootstrap"
  if ! pid=$(running_pid "$dir"); then
    rm -f "$dir/kafka.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "broker $pid still up 30 s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$dir/kafka.pid"
}

fail_start() {  # reason; shows the log's tail, stops what was started
  local dir=$1
  shift
  log "$*"
  if [ -s "$dir/kafka.log" ]; then
    echo "---- last lines of $dir/kafka.log ----" >&2
    tail -n 40 "$dir/kafka.log" >&2
  fi
  stop "$dir" || true
  exit 1
}

start() {
  local dir pid port cport iport cluster_id deadline secured=${2:-}
  mkdir -p "$1"
  dir=$(cd "$1" && pwd)
  if pid=$(running_pid "$dir"); then
    die "a broker (pid $pid) already runs in $dir: stop it first"
  fi
  command -v java >/dev/null || die "java is not installed (apt-get install openjdk-17-jre-headless)"
  fetch

  read -r port cport iport < <(free_ports)
  rm -rf "$dir/data" "$dir/kafka.log" "$dir/bootstrap"
  mkdir -p "$dir/data"
  local probe_port=$port
  local scram=()
  if [ -n "$secured" ]; then
    for f in tls/server.pem tls/ca.pem users; do
      [ -s "$dir/$f" ] || die "start-secured: $dir/$f is missing (python3 tests/support/kafka/secured_material.py $dir)"
    done
    probe_port=$iport
    local mech name password
    while read -r mech name password; do
      [ -n "$mech" ] && scram+=(--add-scram "$mech=[name=$name,password=$password]")
    done <"$dir/users"
  fi

  if [ -z "$secured" ]; then
    cat >"$dir/server.properties" <<EOF
# Written by tests/support/kafka/apache_kafka.sh: a single-node KRaft cluster for tests.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
EOF
  else
    cat >"$dir/server.properties" <<EOF
# Written by tests/support/kafka/apache_kafka.sh start-secured: a single-node KRaft cluster whose clients' only listener is
# SASL_SSL (SCRAM users from DIR/users, created at format time; TLS from the PEM keystore DIR/tls/server.pem).
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=SASL_SSL://127.0.0.1:$port,INTERNAL://127.0.0.1:$iport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_SSL://127.0.0.1:$port,INTERNAL://127.0.0.1:$iport,CONTROLLER://127.0.0.1:$cport
listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$dir/tls/server.pem
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.location=$dir/tls/ca.pem
listener.name.sasl_ssl.ssl.client.auth=requested
EOF
  fi
  cat >>"$dir/server.properties" <<EOF
log.dirs=$dir/data

# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.partitions=4
# As production clusters run: no auto-created topics, and the default 1 MiB message limit (Warden creates its
# topics with the limit it needs, so the broker defaults must not hide a missing topic or a missing limit).
auto.create.topics.enable=false

# Small and light: a test broker on a 2-core machine.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.segment.bytes=16777216
log.retention.bytes=67108864
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
EOF

  cat >"$dir/log4j2.properties" <<'EOF'
# Quiet: warnings and errors only, plus the line saying the server started.
status = warn
# Log through Kafka's own shutdown hook instead of stopping first ("Unable to register Log4j shutdown hook").
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
EOF

  local java_cp=("-cp" "$CACHE/*" "-Dlog4j2.configurationFile=$dir/log4j2.properties")
  cluster_id=$(java "${java_cp[@]}" kafka.tools.StorageTool random-uuid 2>>"$dir/kafka.log" | tail -n 1) \
    || fail_start "$dir" "kafka.tools.StorageTool random-uuid failed"
  java "${java_cp[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
    -c "$dir/server.properties" "${scram[@]}" >>"$dir/kafka.log" 2>&1 \
    || fail_start "$dir" "kafka.tools.StorageTool format failed"

  # shellcheck disable=SC2086  # JAVA_OPTS is a list of options
  nohup java $JAVA_OPTS -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    "${java_cp[@]}" -Dkafka.logs.dir="$dir" \
    kafka.Kafka "$dir/server.properties" >>"$dir/kafka.log" 2>&1 </dev/null &
  echo $! >"$dir/kafka.pid"

  deadline=$((SECONDS + START_TIMEOUT))
  until probe 127.0.0.1 "$probe_port"; do
    kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null || fail_start "$dir" "the broker exited during startup"
    [ "$SECONDS" -lt "$deadline" ] || fail_start "$dir" "the broker did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s"
    sleep 0.3
  done
  echo "127.0.0.1:$port" >"$dir/bootstrap"
  log "Kafka $KAFKA_VERSION up on 127.0.0.1:$port (pid $(cat "$dir/kafka.pid"), log $dir/kafka.log)"
  echo "127.0.0.1:$port"
}

case "${1:-}" in
  start) [ $# -eq 2 ] || usage; start "$2" ;;
  start-secured) [ $# -eq 2 ] || usage; start "$2" secured ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  fetch) [ $# -eq 1 ] || usage; fetch; echo "$CACHE" ;;
  *) usage ;;
esac
