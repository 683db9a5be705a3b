#!/usr/bin/env bash
# Live-features benchmark (README "Live features"): figures only, nothing
# here passes or fails.
#
# 1. Freshness: while a loader posts events over HTTP as fast as it can,
#    a probe posts one event for a user no snapshot has seen and polls
#    POST /predict until that user is answered; event -> prediction p50/p99.
#    With CHURN_BENCH_KAFKA_BROKERS=host:port, the same through Kafka (the
#    probe produces to the topic the server consumes; the loader produces
#    too).
# 2. /predict throughput while ingesting: wrk on churn /predict and on a
#    bare axum hello handler, each while the HTTP loader runs; the ratio.
# 3. RSS after the run (every probe user and a share of the others cached).
#
# Usage: bench/live.sh   (env: USERS=20000 DURATION=10s PROBES=200 BODIES=800
#                          CHURN_BENCH_KAFKA_BROKERS=127.0.0.1:19092)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
USERS="${USERS:-20000}"
DURATION="${DURATION:-10s}"
PROBES="${PROBES:-200}"
BODIES="${BODIES:-800}"
KAFKA="${CHURN_BENCH_KAFKA_BROKERS:-}"
PY="$CHURN_CACHE_DIR/venv-kafka/bin/python"
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --bin churn --example hello_server 2>&1 | tail -1
BIN="$CARGO_TARGET_DIR/release/churn"
HELLO="$CARGO_TARGET_DIR/release/examples/hello_server"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
export RUST_LOG=warn CHURN_SCHEDULE__ENABLED=false CHURN_SERVER__REGISTRY_POLL_MS=0
churn() { "$BIN" --data-dir "$WORK/data" "$@"; }

echo "== preparing $USERS users of generated data"
churn generate-events --users "$USERS" --seed 7 --out "$WORK/events.ndjson" 2>/dev/null
churn ingest "$WORK/events.ndjson" >/dev/null
churn build-features >/dev/null
churn train >/dev/null
# Loader bodies: BODIES x 5,000 new events for the known users, dated in
# the last ten minutes, each body posted once (a resent body would be a
# redelivery: nothing stored).
python3 - "$USERS" "$WORK" "$BODIES" <<'PY'
import json, sys, time, random
users, work, bodies = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
now = int(time.time())
rng = random.Random(3)
kinds = ["login", "view", "purchase"]
for b in range(bodies):
    with open(f"{work}/body{b:04d}.ndjson", "w") as f:
        f.write("".join(
            f'{{"user_id":{rng.randint(1, users)},"event_time":{now - rng.randint(0, 600)},'
            f'"event_type":"{rng.choice(kinds)}","session_id":"b{b}-{i % 50}","amount":1.5}}\n'
            for i in range(5000)))
PY

wait_ready() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "not ready: $1"; exit 1; }
kafka_env=()
if [ -n "$KAFKA" ]; then
  TOPIC="live_bench_$$"
  kafka_env=(CHURN_KAFKA__BROKERS="$KAFKA" CHURN_KAFKA__TOPICS="[\"$TOPIC\"]" CHURN_KAFKA__DLQ_TOPIC="${TOPIC}_dlq"
             CHURN_KAFKA__GROUP_ID="${TOPIC}_g" CHURN_KAFKA__BATCH_MAX_WAIT_MS=20 CHURN_KAFKA__COMMIT_INTERVAL_MS=100
             CHURN_KAFKA__AUTO_OFFSET_RESET=earliest)
  "$PY" - "$KAFKA" "$TOPIC" <<'PY'
from confluent_kafka.admin import AdminClient, NewTopic
import sys
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
for f in admin.create_topics([NewTopic(sys.argv[2], 4, 1)]).values():
    f.result(10)
PY
fi
env "${kafka_env[@]}" "$BIN" --data-dir "$WORK/data" serve --port 18100 & PIDS+=($!)
SERVER_PID=$!
"$HELLO" 18101 & PIDS+=($!)
wait_ready http://127.0.0.1:18100/readyz
wait_ready http://127.0.0.1:18101/healthz

# The loader: two curl loops post the bodies (each once), until stopped or
# out of bodies.
loader() {
  local files=("$WORK"/body*.ndjson) half=$(( ${#files[@]} / 2 ))
  post() { for f in "$@"; do [ -e "$WORK/stop" ] && return; curl -s -o /dev/null --data-binary @"$f" http://127.0.0.1:18100/events || true; rm -f "$f"; done; }
  post "${files[@]:0:$half}" & post "${files[@]:$half}"; wait
}
ingested() { curl -s http://127.0.0.1:18100/metrics | awk '/^churn_events_ingested_total/ {s+=$2} END {print s+0}'; }

freshness() { # mode: http|kafka
  "$PY" - "$1" "$PROBES" "$KAFKA" "${TOPIC:-}" <<'PY'
import json, sys, time, urllib.request
mode, probes, brokers, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
producer = None
if mode == "kafka":
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
def post(path, body=b""):
    req = urllib.request.Request("http://127.0.0.1:18100" + path, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
lat = []
base = 50_000_000 + (1_000_000 if mode == "kafka" else 0)
for i in range(probes):
    user = base + i
    event = json.dumps({"user_id": user, "event_time": int(time.time()), "event_type": "login"}).encode()
    t0 = time.perf_counter()
    if producer:
        producer.produce(topic, event, key=str(user))
        producer.flush(10)
    else:
        assert post("/events", event) == 200
    while post(f"/predict?user_id={user}") != 200:
        if time.perf_counter() - t0 > 30:
            break
    lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.02)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{mode:<6} event -> /predict: p50 {q(0.5):.1f} ms  p99 {q(0.99):.1f} ms  max {lat[-1]:.1f} ms  ({len(lat)} probes)")
PY
}

echo "== freshness while the HTTP loader runs"
loader & LOADER=$!; PIDS+=($LOADER)
sleep 2
n0=$(ingested); t0=$(date +%s.%N)
freshness http
if [ -n "$KAFKA" ]; then
  freshness kafka
else
  echo "kafka: skipped (set CHURN_BENCH_KAFKA_BROKERS=host:port)"
fi
n1=$(ingested); t1=$(date +%s.%N)
awk -v a="$n0" -v b="$n1" -v s="$t0" -v e="$t1" 'BEGIN {printf "events newly stored meanwhile: %.0f events/s\n", (b-a)/(e-s)}'

echo "== /predict throughput while the HTTP loader runs (wrk, 1 thread, 64 connections, $DURATION)"
rps() { BENCH_MAX_USER="$USERS" wrk -t1 -c64 -d"$DURATION" -s bench/predict.lua "$1" | awk '/Requests\/sec/ {print $2}'; }
n0=$(ingested); t0=$(date +%s.%N)
c=$(rps http://127.0.0.1:18100)
n1=$(ingested); t1=$(date +%s.%N)
h=$(rps http://127.0.0.1:18101)
awk -v a="$n0" -v b="$n1" -v s="$t0" -v e="$t1" 'BEGIN {printf "events newly stored during the churn run: %.0f events/s\n", (b-a)/(e-s)}'
printf 'churn /predict (live) %10.0f requests/s\nbare axum hello       %10.0f requests/s\n' "$c" "$h"
awk -v c="$c" -v h="$h" 'BEGIN {printf "ratio churn/hello while ingesting: %.1f%%\n", 100*c/h}'
touch "$WORK/stop"
wait "$LOADER" 2>/dev/null || true
curl -s http://127.0.0.1:18100/metrics | grep -E '^churn_live_(lookups_total|fallbacks_total|users)' || true
echo "RSS of churn serve after the run: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$SERVER_PID/status)"
