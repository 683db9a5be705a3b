#!/usr/bin/env bash
# Scale benchmark on ClickHouse: USERS generated users (default 1M) with
# about 100 events each (the generator's 120 days give ~214 per user; every
# other line is kept, so each user's history keeps its span and its order),
# streamed through `churn ingest -` into a fresh database, then the real
# commands one after another, each timed with its peak RSS:
#   ingest · build-features · train (rows sampled in SQL to
#   training.max_training_rows) · serve (snapshot load, RSS after random
#   /predict traffic over every user).
# Prints figures only: nothing here passes or fails. Needs the ClickHouse
# server of scripts/clickhouse.sh (started here when absent).
#
# Takes about 20 minutes on 2 cores at the defaults (ingest 10 of them).
#
# Usage: bench/scale.sh   (env: USERS=1000000 DAYS=120 KEEP_EVERY=2
#                          MAX_TRAINING_ROWS=1000000 DURATION=10s
#                          KEEP_DB=1 keeps the database for another look)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
USERS="${USERS:-1000000}"
DAYS="${DAYS:-120}"
KEEP_EVERY="${KEEP_EVERY:-2}"
MAX_TRAINING_ROWS="${MAX_TRAINING_ROWS:-1000000}"
DURATION="${DURATION:-10s}"
URL="${CHURN_TEST_CLICKHOUSE_URL:-http://127.0.0.1:8123}"

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
scripts/clickhouse.sh start
cargo build --release --locked --bin churn 2>&1 | tail -1
BIN="$CARGO_TARGET_DIR/release/churn"
WORK="$(mktemp -d)"
DB="churn_scale_$$"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${KEEP_DB:-0}" != 1 ]; then
    curl -sf "$URL" --data-binary "DROP DATABASE IF EXISTS $DB" >/dev/null || true
  else
    echo "kept database $DB"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

export RUST_LOG=warn CHURN_SCHEDULE__ENABLED=false CHURN_SERVER__REGISTRY_POLL_MS=0
export CHURN_DATA_DIR="$WORK/data" CHURN_STORE__TYPE=clickhouse
export CHURN_CLICKHOUSE__URL="$URL" CHURN_CLICKHOUSE__DATABASE="$DB"
# Debian's 18.16 lacks the format row validation needs (config.toml).
export CHURN_CLICKHOUSE__VALIDATION="${CHURN_CLICKHOUSE__VALIDATION:-false}"
export CHURN_TRAINING__MAX_TRAINING_ROWS="$MAX_TRAINING_ROWS"
sql() { curl -sf "$URL" --data-binary "$1"; }
# "<seconds> <peak RSS KiB>" of the last timed command.
timed() { /usr/bin/time -f "%e %M" -o "$WORK/time" "$@"; }
report() { read -r secs kb <"$WORK/time"; printf '%-16s %8.1f s   peak RSS %6d MiB   %s\n' "$1" "$secs" $((kb / 1024)) "${2:-}"; }

echo "== $USERS users, $DAYS days, every ${KEEP_EVERY}th event kept, into $URL database $DB"
t0=$(date +%s.%N)
"$BIN" generate-events --users "$USERS" --days "$DAYS" --seed 11 2>/dev/null \
  | awk -v k="$KEEP_EVERY" 'NR % k == 1 || k == 1' \
  | timed "$BIN" ingest - --json >"$WORK/ingest.json"
t1=$(date +%s.%N)
events=$(sql "SELECT count() FROM $DB.events")
users=$(sql "SELECT uniqExact(user_id) FROM $DB.events")
report ingest "$(awk -v a="$t0" -v b="$t1" -v n="$events" -v u="$users" 'BEGIN {printf "%d events of %d users stored, %.0f events/s end to end (generator and awk in the same pipe)", n, u, n/(b-a)}')"
echo "   on disk in ClickHouse: $(sql "SELECT formatReadableSize(sum(bytes)) FROM system.parts WHERE database = '$DB' AND table = 'events' AND active")"

timed "$BIN" build-features >/dev/null
report build-features "$(sql "SELECT count() FROM $DB.feature_vectors") users' rows (one snapshot)"

timed "$BIN" train --json >"$WORK/train.json"
report train "$(python3 - "$WORK/train.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["sampling"]
print(f"{r['train_rows']} training rows over {len(r['train_cutoffs'])} cutoffs "
      f"(share kept {s['train_share']:.3f}), {r['validation_rows']} validation rows "
      f"(share {s['validation_share']:.3f}), validation AUC {r['metrics']['auc']:.4f}")
print("   phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["phase_secs"].items()))
PY
)"

wait_ready() { for _ in $(seq 1 1200); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "not ready: $1"; exit 1; }
t2=$(date +%s.%N)
"$BIN" serve --port 18004 & PIDS+=($!)
wait_ready http://127.0.0.1:18004/readyz
t3=$(date +%s.%N)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/${PIDS[0]}/status")
echo "serve            $(awk -v a="$t2" -v b="$t3" 'BEGIN {printf "%.1f", b-a}') s to ready (snapshot loaded from ClickHouse), RSS $((rss_kb / 1024)) MiB"
out=$(BENCH_RANDOM=1 BENCH_MAX_USER="$USERS" wrk -t1 -c64 -d"$DURATION" --latency -s bench/predict.lua http://127.0.0.1:18004)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/${PIDS[0]}/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/${PIDS[0]}/status")
served=$(curl -s http://127.0.0.1:18004/metrics | awk '/^churn_feature_snapshot_users/ {print $2}')
echo "   random /predict over $USERS user ids: $(echo "$out" | awk '/Requests\/sec/ {print $2}') requests/s, p99 $(echo "$out" | awk '$1=="99%" {print $2}'), non-2xx $(echo "$out" | awk '/Non-2xx/ {print $NF}') (ids without features)"
echo "   serving $served users' features after the traffic: RSS $((rss_kb / 1024)) MiB (peak $((hwm_kb / 1024)) MiB)"
