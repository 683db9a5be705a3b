#!/usr/bin/env bash
# Installs Airflow 3.3.2 + the HTTP provider into a cached venv and prepares
# a complete AIRFLOW_HOME: metadata DB migrated **and** DAG bundles synced
# (`dags reserialize`). A fresh DB has no bundle rows; the first
# `airflow dags test` adds them, and two first runs in parallel race on
# `UNIQUE constraint failed: dag_bundle.name`. The tests also copy this home
# per test, so they never share one SQLite file.
# No Airflow server is started. ~5 min install and ~40 s setup on first use.
# Usage: scripts/airflow.sh [home]   (`home` prints AIRFLOW_HOME)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$CHURN_CACHE_DIR/venv-airflow"
HOME_DIR="$CHURN_CACHE_DIR/airflow/home"
if [ "${1:-}" = home ]; then echo "$HOME_DIR"; exit 0; fi
venv "$VENV" apache-airflow==3.3.2 apache-airflow-providers-http
# The marker names what the home was prepared for: a new DAG folder (another
# clone) or Airflow version prepares it again.
want="3.3.2 $REPO/airflow/dags"
if [ ! -f "$HOME_DIR/.prepared" ] || [ "$(cat "$HOME_DIR/.prepared")" != "$want" ]; then
  rm -rf "$HOME_DIR"; mkdir -p "$HOME_DIR"
  echo "airflow: migrating the metadata DB and syncing DAG bundles in $HOME_DIR"
  export AIRFLOW_HOME="$HOME_DIR" AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER="$REPO/airflow/dags"
  { "$VENV/bin/airflow" db migrate && "$VENV/bin/airflow" dags reserialize; } > "$HOME_DIR/setup.log" 2>&1 \
    || { tail -n 40 "$HOME_DIR/setup.log" >&2; exit 1; }
  echo "$want" > "$HOME_DIR/.prepared"
fi
echo "airflow: ready ($VENV, AIRFLOW_HOME=$HOME_DIR)"
