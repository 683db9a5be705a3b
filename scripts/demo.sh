#!/usr/bin/env bash
# The main job on the embedded default: generate -> ingest -> build features
# -> train -> register. DATA_DIR (default ./data) is reset first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/churn-target}"
DATA_DIR="${DATA_DIR:-./data}"
cargo build --release --locked
churn="$CARGO_TARGET_DIR/release/churn --data-dir $DATA_DIR"
rm -rf "$DATA_DIR"
mkdir -p "$DATA_DIR"
$churn generate-events --users 2000 --out "$DATA_DIR/events.ndjson"
$churn ingest "$DATA_DIR/events.ndjson"
$churn build-features
$churn train
$churn models list
