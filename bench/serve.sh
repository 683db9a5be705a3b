#!/usr/bin/env bash
# Serving benchmark: `churn serve` vs a bare axum hello handler, both driven
# by wrk from a separate process, same machine, same run, same settings.
# Prints requests/s and p50/p99 for both and the ratio, and the same for a
# second server whose users have UUID string ids (ratio to integer ids);
# then a fixed-rate run (oha -q, installed here into the tools cache) for
# the p99 at 10k requests/s; then server RSS with 1M and 10M users'
# snapshots of the standard spec loaded, after random /predict traffic over
# all of them, for integer and for UUID ids.
# Prints figures only: nothing here passes or fails.
#
# Usage: bench/serve.sh   (env: DURATION=10s CONNECTIONS=64 USERS=5000
#                          RSS_USERS="1000000 10000000"; RSS_USERS= skips it;
#                          RSS_IDS="int uuid")
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
USERS="${USERS:-5000}"
RSS_USERS="${RSS_USERS-1000000 10000000}"
RSS_IDS="${RSS_IDS:-int uuid}"
OHA="${OHA:-$CHURN_TOOLS/bin/oha}"

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
if [ ! -x "$OHA" ]; then
  echo "== installing oha into $CHURN_TOOLS (once; a few minutes on 2 cores)"
  cargo install oha --locked --root "$CHURN_TOOLS" 2>&1 | tail -1
fi
cargo build --release --locked --bin churn --example hello_server 2>&1 | tail -1
BIN="$CARGO_TARGET_DIR/release/churn"
HELLO="$CARGO_TARGET_DIR/release/examples/hello_server"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

export RUST_LOG=warn CHURN_SCHEDULE__ENABLED=false CHURN_SERVER__REGISTRY_POLL_MS=0
churn() { "$BIN" --data-dir "$WORK/data" "$@"; }
echo "== preparing $USERS users of generated data (integer ids, and UUID ids)"
churn generate-events --users "$USERS" --seed 7 --out "$WORK/events.ndjson" 2>/dev/null
churn ingest "$WORK/events.ndjson" >/dev/null
churn build-features >/dev/null
churn train >/dev/null
uuid() { "$BIN" --data-dir "$WORK/uuid" "$@"; }
uuid generate-events --users "$USERS" --seed 7 --string-ids --out "$WORK/uuid.ndjson" 2>/dev/null
uuid ingest "$WORK/uuid.ndjson" >/dev/null
uuid build-features >/dev/null
uuid train >/dev/null
# The ids with events, in file order (what wrk cycles over), for both
# kinds: the client does the same work per request.
ids_of() { python3 -c 'import json,sys
seen = {}
for line in open(sys.argv[1]):
    seen.setdefault(json.loads(line)["user_id"], None)
print("\n".join(str(u) for u in seen))' "$1"; }
ids_of "$WORK/uuid.ndjson" > "$WORK/uuid.ids"
ids_of "$WORK/events.ndjson" > "$WORK/int.ids"

wait_ready() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "not ready: $1"; exit 1; }
"$BIN" --data-dir "$WORK/data" serve --port 18000 & PIDS+=($!)
"$HELLO" 18001 & PIDS+=($!)
"$BIN" --data-dir "$WORK/uuid" serve --port 18003 & PIDS+=($!)
wait_ready http://127.0.0.1:18000/readyz
wait_ready http://127.0.0.1:18001/healthz
wait_ready http://127.0.0.1:18003/readyz

# wrk's --latency table: "50%  123.00us"; normalise to microseconds.
to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} else print v}'; }
run_wrk() { # url [query] [ids file] -> "rps p50_us p99_us non2xx"
  local out; out=$(BENCH_QUERY="${2:-}" BENCH_IDS="${3:-}" BENCH_MAX_USER="$USERS" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/predict.lua "$1")
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_us)
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_us)
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$rps $p50 $p99 ${non2xx:-0}"
}
echo "== wrk: 1 thread, $CONNECTIONS connections, $DURATION each (warm-up 2s first)"
BENCH_MAX_USER="$USERS" wrk -t1 -c"$CONNECTIONS" -d2s -s bench/predict.lua http://127.0.0.1:18000 >/dev/null
read -r c_rps c_p50 c_p99 c_bad <<<"$(run_wrk http://127.0.0.1:18000)"
read -r h_rps h_p50 h_p99 _ <<<"$(run_wrk http://127.0.0.1:18001)"
read -r e_rps e_p50 e_p99 _ <<<"$(run_wrk http://127.0.0.1:18000 '&explain=true')"
BENCH_IDS="$WORK/uuid.ids" wrk -t1 -c"$CONNECTIONS" -d2s -s bench/predict.lua http://127.0.0.1:18003 >/dev/null
read -r i_rps i_p50 i_p99 _ <<<"$(run_wrk http://127.0.0.1:18000 '' "$WORK/int.ids")"
read -r u_rps u_p50 u_p99 u_bad <<<"$(run_wrk http://127.0.0.1:18003 '' "$WORK/uuid.ids")"
read -r i2_rps i2_p50 i2_p99 _ <<<"$(run_wrk http://127.0.0.1:18000 '' "$WORK/int.ids")"
printf '%-22s %12s %10s %10s\n' target "requests/s" "p50 us" "p99 us"
printf '%-22s %12.0f %10.0f %10.0f\n' "churn /predict" "$c_rps" "$c_p50" "$c_p99"
printf '%-22s %12.0f %10.0f %10.0f\n' "churn integer ids (file)" "$i_rps" "$i_p50" "$i_p99"
printf '%-22s %12.0f %10.0f %10.0f\n' "churn UUID ids (file)" "$u_rps" "$u_p50" "$u_p99"
printf '%-22s %12.0f %10.0f %10.0f\n' "churn integer again" "$i2_rps" "$i2_p50" "$i2_p99"
printf '%-22s %12.0f %10.0f %10.0f\n' "churn explain=true" "$e_rps" "$e_p50" "$e_p99"
printf '%-22s %12.0f %10.0f %10.0f\n' "bare axum hello" "$h_rps" "$h_p50" "$h_p99"
awk -v c="$c_rps" -v h="$h_rps" 'BEGIN {printf "throughput ratio churn/hello: %.1f%%\n", 100*c/h}'
awk -v c="$c_rps" -v e="$e_rps" 'BEGIN {printf "throughput ratio explain/plain: %.1f%%\n", 100*e/c}'
awk -v a="$i_rps" -v b="$i2_rps" -v u="$u_rps" 'BEGIN {printf "throughput ratio UUID/integer ids: %.1f%% (both from id files; the integer runs before and after averaged)\n", 200*u/(a+b)}'
echo "non-2xx answers from churn (unknown users count here): integer $c_bad, UUID $u_bad"

if [ -x "$OHA" ]; then
  for conns in 8 "$CONNECTIONS"; do
  echo "== oha: fixed rate 10000 requests/s for $DURATION, $conns connections"
  for target in "churn 18000" "hello 18001"; do
    set -- $target
    "$OHA" -z "$DURATION" -q 10000 -c "$conns" -m POST --no-tui --output-format json \
      "http://127.0.0.1:$2/predict?user_id=42" > "$WORK/oha-$1.json"
    python3 - "$WORK/oha-$1.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["summary"], d["latencyPercentiles"]
print(f"{sys.argv[2]:<6} rps {s['requestsPerSec']:.0f}  p50 {p['p50']*1e6:.0f} us  p99 {p['p99']*1e6:.0f} us  success {s['successRate']*100:.2f}%")
PY
  done
  done
else
  echo "== oha not found at $OHA: skipped the fixed-rate run (cargo install oha --root $CHURN_TOOLS)"
fi

for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
PIDS=()
# Two events per user (a login, a purchase five hours later) give every
# user a full row of the standard spec; the model trained above scores them.
for n in $RSS_USERS; do
for ids in $RSS_IDS; do
  echo "== RSS with $n users' features loaded ($ids ids)"
  python3 - "$n" "$ids" > "$WORK/many.ndjson" <<'PY'
import sys, datetime, hashlib
n, ids = int(sys.argv[1]), sys.argv[2]
t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)
a = t.strftime("%Y-%m-%d %H:%M:%S")
b = (t + datetime.timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S")
w = sys.stdout.write
for u in range(1, n + 1):
    if ids == "uuid":
        h = hashlib.md5(str(u).encode()).hexdigest()
        uid = f'"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"'
    else:
        uid = str(u)
    w(f'{{"user_id":{uid},"event_time":"{a}","event_type":"login","session_id":"s{u}"}}\n')
    w(f'{{"user_id":{uid},"event_time":"{b}","event_type":"purchase","session_id":"s{u}","amount":{u % 97}.5}}\n')
PY
  # Both kinds of ids are read from a file by wrk, so the client does the
  # same work per request and the ratio is the server's.
  python3 -c 'import json,sys
for i, line in enumerate(open(sys.argv[1])):
    if i % 2 == 0: print(json.loads(line)["user_id"])' "$WORK/many.ndjson" > "$WORK/many.ids"
  if [ "$ids" = uuid ]; then dir="$WORK/uuid"; else dir="$WORK/data"; fi
  t0=$(date +%s.%N)
  "$BIN" --data-dir "$dir" ingest "$WORK/many.ndjson" >/dev/null
  t1=$(date +%s.%N)
  "$BIN" --data-dir "$dir" build-features >/dev/null
  t2=$(date +%s.%N)
  rm -f "$WORK/many.ndjson"
  "$BIN" --data-dir "$dir" serve --port 18002 & PIDS+=($!)
  wait_ready http://127.0.0.1:18002/readyz
  t3=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v n="$n" \
    'BEGIN {printf "ingest %.1f s (%.0f events/s), build-features %.1f s, serve to ready %.1f s\n", b-a, 2*n/(b-a), c-b, d-c}'
  rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/${PIDS[0]}/status")
  echo "RSS at ready: $((rss_kb / 1024)) MiB"
  out=$(BENCH_RANDOM=1 BENCH_MAX_USER="$n" BENCH_IDS="$WORK/many.ids" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/predict.lua http://127.0.0.1:18002)
  echo "random /predict over $n users: $(echo "$out" | awk '/Requests\/sec/ {print $2}') requests/s, p99 $(echo "$out" | awk '$1=="99%" {print $2}'), non-2xx $(echo "$out" | awk '/Non-2xx/ {print $NF}')"
  users=$(curl -s http://127.0.0.1:18002/metrics | awk '/^churn_feature_snapshot_users/ {print $2}')
  rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/${PIDS[0]}/status")
  hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/${PIDS[0]}/status")
  echo "serving $users users' features after the traffic ($ids ids): RSS $((rss_kb / 1024)) MiB (peak $((hwm_kb / 1024)) MiB)"
  kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
  PIDS=()
done
done
