#!/usr/bin/env bash
# Installs (cargo, cached binary, idempotent) and starts an S3-compatible
# server on 127.0.0.1:${S3_PORT:-19100}: s3s-fs 0.14.1, a real S3 API with
# SigV4 authentication over a directory (MinIO's server is not installable
# here; newer s3s-fs needs a newer rustc). Buckets are directories under
# $CHURN_CACHE_DIR/s3/root; `mlflow-artifacts`, `models` and `churn-test`
# are created.
# Usage: scripts/s3.sh [start|stop|build]
#   env: S3_PORT, S3_ACCESS_KEY (churn), S3_SECRET_KEY (churn-secret)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DIR="$CHURN_CACHE_DIR/s3"
PORT="${S3_PORT:-19100}"
ACCESS="${S3_ACCESS_KEY:-churn}"
SECRET="${S3_SECRET_KEY:-churn-secret}"

if [ "${1:-start}" = stop ]; then stop_group "$DIR/s3s.pid"; exit 0; fi

if [ ! -x "$CHURN_TOOLS/bin/s3s-fs" ]; then
  echo "s3: building s3s-fs 0.14.1 into $CHURN_TOOLS (a few CPU-minutes, once)"
  # Its own target dir: the project's build must not wait on this one's lock.
  CARGO_TARGET_DIR="$CHURN_CACHE_DIR/tools-target" \
    cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$CHURN_TOOLS" > "$CHURN_CACHE_DIR/s3s-build.log" 2>&1 \
    || { tail -n 30 "$CHURN_CACHE_DIR/s3s-build.log" >&2; exit 1; }
  rm -rf "$CHURN_CACHE_DIR/tools-target"
fi
if [ "${1:-start}" = build ]; then exit 0; fi

mkdir -p "$DIR/root/mlflow-artifacts" "$DIR/root/models" "$DIR/root/churn-test"
need_start "$PORT" "$DIR/s3s.pid" s3 || exit 0
# s3s-fs resolves every object path through its working directory: start
# it from its own, never from a checkout that may be deleted.
cd "$DIR"
setsid nohup "$CHURN_TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$PORT" \
  --access-key "$ACCESS" --secret-key "$SECRET" "$DIR/root" > "$DIR/s3s.log" 2>&1 < /dev/null &
echo $! > "$DIR/s3s.pid"
for _ in $(seq 1 100); do
  listening "$PORT" && { echo "s3: s3s-fs ready on http://127.0.0.1:$PORT"; exit 0; }
  sleep 0.1
done
echo "s3: s3s-fs did not start; log:" >&2; tail -n 30 "$DIR/s3s.log" >&2; exit 1
