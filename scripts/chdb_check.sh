#!/usr/bin/env bash
# Installs chDB (ClickHouse 26.x as a Python library) into a cached venv and
# runs scripts/chdb_check.py: churn's generated SQL on a modern engine vs the
# 18.16 server. Usage: scripts/chdb_check.sh CHURN_BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CHURN_CHDB_VENV:-/var/tmp/churn-venv-chdb}"
if ! "$VENV/bin/python" -c "import chdb" 2>/dev/null; then
  echo "chdb: installing chdb-core-lite into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q chdb-core-lite==26.5.0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" scripts/chdb_check.py "$1" "${CHURN_TEST_CLICKHOUSE_URL:-http://127.0.0.1:8123}" "$WORK"
