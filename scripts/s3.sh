#!/usr/bin/env bash
# Installs (cargo, cached binary, idempotent) and starts an S3-compatible
# server on 127.0.0.1:${S3_PORT:-19100}: s3s-fs 0.14.1, a real S3 API with
# SigV4 authentication over a directory (MinIO's server is not installable
# here; newer s3s-fs needs a newer rustc). Buckets are directories under
# $S3_DIR/root; `mlflow-artifacts`, `models` and `churn-test` are created.
# Usage: scripts/s3.sh [start|stop]
#   env: S3_DIR, S3_PORT, S3_ACCESS_KEY (churn), S3_SECRET_KEY (churn-secret), CHURN_TOOLS
set -euo pipefail
DIR="${S3_DIR:-/var/tmp/churn-s3}"
PORT="${S3_PORT:-19100}"
TOOLS="${CHURN_TOOLS:-/var/tmp/churn-tools}"
ACCESS="${S3_ACCESS_KEY:-churn}"
SECRET="${S3_SECRET_KEY:-churn-secret}"

if [ "${1:-start}" = stop ]; then
  [ -f "$DIR/s3s.pid" ] && kill "$(cat "$DIR/s3s.pid")" 2>/dev/null || true
  rm -f "$DIR/s3s.pid"; exit 0
fi

mkdir -p "$DIR/root/mlflow-artifacts" "$DIR/root/models" "$DIR/root/churn-test"
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if listening "$PORT"; then
  echo "s3: something already listens on 127.0.0.1:$PORT (s3s-fs)"
  exit 0
fi
if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
  echo "s3: building s3s-fs 0.14.1 into $TOOLS (a few CPU-minutes, once)"
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$TOOLS" >/dev/null 2>&1
fi
setsid nohup "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$PORT" \
  --access-key "$ACCESS" --secret-key "$SECRET" "$DIR/root" > "$DIR/s3s.log" 2>&1 < /dev/null &
echo $! > "$DIR/s3s.pid"
for _ in $(seq 1 100); do
  listening "$PORT" && { echo "s3: s3s-fs ready on http://127.0.0.1:$PORT"; exit 0; }
  sleep 0.1
done
echo "s3: s3s-fs did not start; log:" >&2; tail -n 30 "$DIR/s3s.log" >&2; exit 1
