#!/usr/bin/env bash
# Installs (PyPI, cached venv, idempotent) and starts an MLflow 3.17.2
# tracking server on 127.0.0.1:${MLFLOW_PORT:-15000} with a SQLite backend
# and a local artifact root behind its artifact proxy. Job execution is off
# (0.5 GB RSS instead of 2.3 GB). 3.18.0's pinned skinny package is missing
# from the index, hence the pin. Ready after 30-50 s on this machine.
# Usage: scripts/mlflow.sh [start|stop|install]    env: MLFLOW_PORT
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DIR="$CHURN_CACHE_DIR/mlflow"
VENV="$CHURN_CACHE_DIR/venv-mlflow"
PORT="${MLFLOW_PORT:-15000}"
URL="http://127.0.0.1:$PORT"

if [ "${1:-start}" = stop ]; then stop_group "$DIR/mlflow.pid"; exit 0; fi
venv "$VENV" mlflow==3.17.2
if [ "${1:-start}" = install ]; then exit 0; fi
need_start "$PORT" "$DIR/mlflow.pid" mlflow || exit 0
mkdir -p "$DIR/artifacts"
# setsid: the server forks workers; the pid file holds the group leader.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid nohup "$VENV/bin/mlflow" server \
  --host 127.0.0.1 --port "$PORT" --workers 1 \
  --backend-store-uri "sqlite:///$DIR/mlflow.db" \
  --artifacts-destination "file://$DIR/artifacts" > "$DIR/mlflow.log" 2>&1 < /dev/null &
echo $! > "$DIR/mlflow.pid"
for _ in $(seq 1 240); do
  curl -sf "$URL/health" >/dev/null 2>&1 && { echo "mlflow: ready at $URL"; exit 0; }
  sleep 0.5
done
echo "mlflow: not ready after 120 s; log:" >&2; tail -n 40 "$DIR/mlflow.log" >&2; exit 1
