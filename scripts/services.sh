#!/usr/bin/env bash
# Starts (or stops) every real service the test suite uses, from the cache
# dir $CHURN_CACHE_DIR (see scripts/lib.sh).
# Usage: scripts/services.sh [start|stop]
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-start}" in
  start) ./clickhouse.sh; ./clickhouse-cluster.sh; ./kafka.sh; ./s3.sh; ./mlflow.sh; ./airflow.sh ;;
  stop)  ./clickhouse.sh stop; ./clickhouse-cluster.sh stop; ./kafka.sh stop; ./s3.sh stop; ./mlflow.sh stop; ./podman.sh stop ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
