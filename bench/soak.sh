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
PID=""
cleanup() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; rm -rf "$WORK"; }
trap cleanup EXIT
CHURN_SERVER__ADMIN_TOKEN="$TOKEN" CHURN_SCHEDULE__ENABLED=false RUST_LOG=warn \
  "$BIN" --data-dir "$WORK/data" demo --port 0 --users "$USERS" > "$WORK/demo.log" 2>&1 &
PID=$!
BASE=""
for _ in $(seq 1200); do
  BASE="$(sed -n 's/^Ready: serving on \(http[^ ]*\).*/\1/p' "$WORK/demo.log" | head -1)"
  [ -n "$BASE" ] && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/demo.log"; exit 1; }
  sleep 0.2
done
[ -n "$BASE" ] || { cat "$WORK/demo.log"; echo "demo never became ready" >&2; exit 1; }
echo "soak: demo at $BASE (pid $PID), $USERS users"
USERS="$USERS" python3 bench/soak.py "$BASE" "$PID" "$TOKEN"
