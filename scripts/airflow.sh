#!/usr/bin/env bash
# Installs Airflow 3.3.2 + the HTTP provider into a cached venv and prepares
# an AIRFLOW_HOME with a migrated metadata DB (idempotent). No Airflow server
# is started: the tests run `airflow dags test churn_pipeline` against a
# churn server. ~5 min install and ~25 s migrate on first use.
# Usage: scripts/airflow.sh        env: AIRFLOW_VENV, CHURN_AIRFLOW_HOME
set -euo pipefail
VENV="${AIRFLOW_VENV:-/var/tmp/churn-venv-airflow}"
HOME_DIR="${CHURN_AIRFLOW_HOME:-/var/tmp/churn-airflow/home}"
if [ ! -x "$VENV/bin/airflow" ]; then
  echo "airflow: installing apache-airflow==3.3.2 into $VENV (about 5 minutes, once)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check apache-airflow==3.3.2 apache-airflow-providers-http
fi
mkdir -p "$HOME_DIR"
if [ ! -f "$HOME_DIR/.migrated" ]; then
  echo "airflow: migrating the metadata DB in $HOME_DIR"
  AIRFLOW_HOME="$HOME_DIR" AIRFLOW__CORE__LOAD_EXAMPLES=False "$VENV/bin/airflow" db migrate > "$HOME_DIR/migrate.log" 2>&1 \
    || { tail -n 40 "$HOME_DIR/migrate.log" >&2; exit 1; }
  touch "$HOME_DIR/.migrated"
fi
echo "airflow: ready ($VENV, AIRFLOW_HOME=$HOME_DIR)"
