#!/usr/bin/env bash
# Soak test (not in CI): `churn demo` under a fixed request rate with events
# posted every second and a retrain every minute, for 10 minutes by default.
# Prints errors, latency and the server's RSS at start, end and over time.
# Usage: bench/soak.sh   (env: DURATION=600 RATE=200 USERS=2000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
USERS="${USERS:-2000}"
cargo build --release --locked --bin churn 2>&1 | tail -1
BIN="$CARGO_TARGET_DIR/release/churn"
WORK="$(mktemp -d)"
TOKEN="soak-token"
DEMO_PID=""
cleanup() { if [ -n "$DEMO_PID" ]; then kill "$DEMO_PID" 2>/dev/null || true; wait "$DEMO_PID" 2>/dev/null || true; fi; rm -rf "$WORK"; }
trap cleanup EXIT
start_demo "$BIN" "$WORK" "$USERS" CHURN_SERVER__ADMIN_TOKEN="$TOKEN" CHURN_SCHEDULE__ENABLED=false
BASE="$DEMO_BASE"
echo "soak: demo at $BASE (pid $DEMO_PID), $USERS users"
USERS="$USERS" python3 bench/soak.py "$BASE" "$DEMO_PID" "$TOKEN"
