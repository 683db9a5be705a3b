#!/usr/bin/env bash
# Installs chDB (ClickHouse 26.x as a Python library) into a cached venv and
# runs scripts/chdb_check.py: churn's generated SQL on a modern engine vs the
# 18.16 server. Usage: scripts/chdb_check.sh [install|churn-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
VENV="$CHURN_CACHE_DIR/venv-chdb"
venv "$VENV" chdb-core-lite==26.5.0
if [ "$1" = install ]; then exit 0; fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" scripts/chdb_check.py "$1" "${CHURN_TEST_CLICKHOUSE_URL:-http://127.0.0.1:8123}" "$WORK"
