#!/usr/bin/env bash
# The one test command: formatting, lints, the build, then every test binary
# against real services, which it installs and starts when absent
# (idempotent; cached under $CHURN_CACHE_DIR, default /var/tmp/churn: see
# scripts/lib.sh). Prints the wall time of every phase and a summary.
#
# Usage: scripts/test.sh                                   (repository root)
#        CHURN_CACHE_DIR=$(mktemp -d) scripts/test.sh      (as a fresh machine;
#                                     stop warm services first: scripts/services.sh stop)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

STARTED=$(date +%s.%N)
TIMES="$(mktemp)"
trap 'rm -f "$TIMES"' EXIT
# phase NAME CMD...: runs CMD under a heading and records its wall time.
phase() {
  local name="$1"; shift
  echo "== $name"
  local t0; t0=$(date +%s.%N)
  "$@"
  local secs; secs=$(echo "$(date +%s.%N) - $t0" | bc)
  printf '%-52s %8.1f s\n' "$name" "$secs" | tee -a "$TIMES"
}
summary() {
  echo "== wall time per phase"
  cat "$TIMES"
  printf '%-52s %8.1f s\n' "total" "$(echo "$(date +%s.%N) - $STARTED" | bc)"
}
command -v bc >/dev/null || { apt-get update -qq >/dev/null 2>&1 || true; apt-get install -y -qq bc >/dev/null; }

# The Python installs (minutes of downloads on a fresh cache) run in the
# background while cargo builds; their services start once both are done.
PY_LOG="$CHURN_CACHE_DIR/python-installs.log"
( t0=$(date +%s)
  scripts/kafka.sh tansu-bin >/dev/null && scripts/mlflow.sh install && scripts/airflow.sh \
    && scripts/chdb_check.sh install && scripts/api_conformance.sh install && scripts/notebook.sh install && echo "python installs done in $(( $(date +%s) - t0 )) s"
) > "$PY_LOG" 2>&1 &
PY_PID=$!

services_base() {
  scripts/clickhouse.sh
  # Two ClickHouse 18.16 shards and ZooKeeper for clickhouse.cluster mode.
  scripts/clickhouse-cluster.sh
  # The compose client validates docker-compose.yml without an engine.
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    echo "installing Debian's docker-compose (to validate docker-compose.yml)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  fi
  # promtool (Debian's prometheus package) checks /metrics.
  if ! command -v promtool >/dev/null; then
    echo "installing Debian's prometheus (for promtool)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  # The dashboard test drives Debian's chromium through chromedriver.
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "installing Debian's chromium and chromium-driver (for tests/dashboard.rs)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  scripts/s3.sh build
  # Rootful podman and the Dockerfile's base images, made locally
  # (tests/container.rs, tests/compose.rs).
  scripts/podman.sh images
}
phase "services: ClickHouse (+ 2-shard cluster), docker-compose, chromium, s3s-fs build, podman" services_base

phase "cargo fmt --check" cargo fmt --all -- --check
phase "cargo clippy" cargo clippy --release --all-targets --locked -- -D warnings
# The same build command the Dockerfile runs (tests/deploy.rs keeps them equal):
build() {
  cargo build --release --locked --bin churn
}
phase "cargo build (the Dockerfile's command)" build
# Release mode: training-heavy tests are 10x faster and the build is shared
# with the benchmarks and the main-job command.
BINS="$(mktemp)"
build_tests() {
  cargo test --release --locked --no-run --message-format=json-render-diagnostics \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])
' > "$BINS"
}
phase "cargo test --no-run (test binaries)" build_tests

wait_python() {
  if ! wait "$PY_PID"; then echo "python installs failed:" >&2; cat "$PY_LOG" >&2; exit 1; fi
  cat "$PY_LOG"
}
phase "services: python installs (ran beside the build)" wait_python
services_rest() {
  scripts/kafka.sh
  scripts/s3.sh
  scripts/mlflow.sh
  scripts/podman.sh socket
  scripts/podman.sh compose-images
}
phase "services: Kafka brokers, S3, MLflow, podman socket and compose images" services_rest

export CHURN_TEST_CLICKHOUSE_URL="${CHURN_TEST_CLICKHOUSE_URL:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}"
export CHURN_TEST_KAFKA_BROKERS="${CHURN_TEST_KAFKA_BROKERS:-noida=127.0.0.1:${NOIDA_PORT:-19092},tansu=127.0.0.1:${TANSU_PORT:-19093}}"
CHURN_TEST_TANSU_BIN="$(scripts/kafka.sh tansu-bin)"; export CHURN_TEST_TANSU_BIN
export CHURN_TEST_S3_ENDPOINT="${CHURN_TEST_S3_ENDPOINT:-http://127.0.0.1:${S3_PORT:-19100}}"
export CHURN_TEST_MLFLOW_URI="${CHURN_TEST_MLFLOW_URI:-http://127.0.0.1:${MLFLOW_PORT:-15000}}"
export CHURN_TEST_MLFLOW_PYTHON="$CHURN_CACHE_DIR/venv-mlflow/bin/python3"
export CHURN_TEST_AIRFLOW_BIN="$CHURN_CACHE_DIR/venv-airflow/bin/airflow"
CHURN_TEST_AIRFLOW_HOME="$(scripts/airflow.sh home)"; export CHURN_TEST_AIRFLOW_HOME
CHURN_TEST_JUPYTER="$(scripts/notebook.sh jupyter)"; export CHURN_TEST_JUPYTER
eval "$(scripts/podman.sh env)"

# Each test binary on its own, so its wall time is known; a failing one
# does not stop the others, the command fails at the end.
FAILED=()
run_tests() { "$1" --test-threads=2 || { FAILED+=("$2"); echo "FAILED: $2"; }; }
while read -r kind name exe; do
  phase "test $kind $name" run_tests "$exe" "$kind $name"
done < "$BINS"

# The ClickHouse suites once more, on the two-shard cluster: the store
# contracts, the SQLite/ClickHouse parity and end-to-end tests, and the
# Kafka → ClickHouse tests (exactly-once across kill -9, two replicas, and
# Kafka → cluster → train → serve with live features on two replicas).
cluster_suites() {
  local shards; shards="$(scripts/clickhouse-cluster.sh url),http://127.0.0.1:${CH_SHARD2_HTTP:-18224}"
  CHURN_TEST_CLICKHOUSE_URL="$(scripts/clickhouse-cluster.sh url)" \
  CHURN_TEST_CLICKHOUSE_CLUSTER=churn_cluster CHURN_TEST_CLICKHOUSE_SHARD_URLS="$shards" \
  bash -c '
    set -u; failed=0
    while read -r kind name exe; do
      case "$name" in
        contracts) "$exe" --test-threads=2 clickhouse_store:: || failed=1 ;;
        clickhouse) "$exe" --test-threads=2 || failed=1 ;;
        kafka) "$exe" --test-threads=2 kill_9_mid_stream two_replicas_share events_through_kafka_reach_every_replica_live || failed=1 ;;
      esac
    done < "$1"
    exit $failed' _ "$BINS" || { FAILED+=("cluster suites"); echo "FAILED: cluster suites"; }
}
phase "test contracts / clickhouse / kafka on the 2-shard cluster" cluster_suites
rm -f "$BINS"

phase "modern ClickHouse check (chDB 26.x vs the 18.16 server)" \
  scripts/chdb_check.sh "$CARGO_TARGET_DIR/release/churn"
phase "API conformance (schemathesis, promtool, alert rules, dashboard)" \
  scripts/api_conformance.sh "$CARGO_TARGET_DIR/release/churn"
summary
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "failed test binaries: ${FAILED[*]}" >&2
  exit 1
fi
