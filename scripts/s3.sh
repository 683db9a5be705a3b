#!/usr/bin/env bash
# Installs (cargo, cached binary, idempotent) and starts an S3-compatible
# server on 127.0.0.1:${S3_PORT:-19100}: s3s-fs 0.14.1 with atomic
# conditional writes (our patch, below), a real S3 API with
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

# s3s-fs's conditional writes (If-Match / If-None-Match) check, then write:
# two racing compare-and-swaps could both succeed. Our registry's aliases
# and the replicas' lease are compare-and-swaps, so the suite runs a build
# patched to make the check and the write one step
# (scripts/s3s-fs-atomic-cas.patch); the stamp rebuilds it when the patch
# changes.
PATCH="$(cd "$(dirname "$0")" && pwd)/s3s-fs-atomic-cas.patch"
STAMP="$CHURN_TOOLS/bin/s3s-fs.patch-sha256"
WANT="$(sha256sum "$PATCH" | cut -d' ' -f1)"
if [ ! -x "$CHURN_TOOLS/bin/s3s-fs" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "s3: building s3s-fs 0.14.1 + atomic-CAS patch into $CHURN_TOOLS (a few CPU-minutes, once)"
  LOG="$CHURN_CACHE_DIR/s3s-build.log"
  # The published crate's source, fetched by cargo through a throwaway
  # manifest that names it.
  FETCH="$CHURN_CACHE_DIR/s3s-fs-fetch"
  SRC="$CHURN_CACHE_DIR/s3s-fs-src"
  rm -rf "$FETCH" "$SRC"; mkdir -p "$FETCH/src" "$SRC"
  printf '[package]\nname = "fetch-s3s-fs"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\ns3s-fs = "=0.14.1"\n' > "$FETCH/Cargo.toml"
  : > "$FETCH/src/lib.rs"
  cargo fetch --manifest-path "$FETCH/Cargo.toml" > "$LOG" 2>&1 \
    || { tail -n 30 "$LOG" >&2; exit 1; }
  CRATE="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/s3s-fs-0.14.1 | head -n 1)"
  cp -r "$CRATE/." "$SRC/"
  (cd "$SRC" && patch -p1 < "$PATCH") >> "$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; exit 1; }
  # Its own target dir: the project's build must not wait on this one's lock.
  CARGO_TARGET_DIR="$CHURN_CACHE_DIR/tools-target" \
    cargo install --path "$SRC" --features binary --locked --force --root "$CHURN_TOOLS" >> "$LOG" 2>&1 \
    || { tail -n 30 "$LOG" >&2; exit 1; }
  rm -rf "$CHURN_CACHE_DIR/tools-target" "$FETCH" "$SRC"
  echo "$WANT" > "$STAMP"
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
