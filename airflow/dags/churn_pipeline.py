"""churn_pipeline: generate_events -> build_user_features -> train_model.

The seed's Airflow DAG, as orchestration only: every task calls the churn
server's admin API (default) or the `churn` CLI, and the business logic
stays in churn. Configuration:

- Connection `churn_api` (e.g. env AIRFLOW_CONN_CHURN_API=http://churn:8000).
- Variable `churn_admin_token` (env AIRFLOW_VAR_CHURN_ADMIN_TOKEN): the
  server's CHURN_SERVER__ADMIN_TOKEN.
- Env CHURN_DAG_MODE: "api" (default) or "cli" (runs `churn` on the worker
  with its own CHURN_* configuration; CHURN_BIN names the binary).
- DAG params (override with `--conf`): users, days, seed, end (RFC 3339 or
  empty for now), poll_seconds, timeout_seconds.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, Variable

MODE = os.environ.get("CHURN_DAG_MODE", "api")
CHURN_BIN = os.environ.get("CHURN_BIN", "churn")

default_args = {"retries": 1, "retry_delay": timedelta(seconds=30)}


def _headers() -> dict[str, str]:
    token = Variable.get("churn_admin_token", default="")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _hook(method: str):
    from airflow.providers.http.hooks.http import HttpHook

    return HttpHook(method=method, http_conn_id="churn_api")


def generate_events(**context) -> dict:
    p = context["params"]
    body = {"users": int(p["users"]), "days": int(p["days"]), "seed": int(p["seed"])}
    if p.get("end"):
        body["end"] = p["end"]
    r = _hook("POST").run("/admin/events/generate", data=json.dumps(body), headers=_headers())
    report = r.json()
    print(f"generated and stored: {report}")
    return report


def _run_job(endpoint: str, **context) -> dict:
    """Starts a server job and waits for it: the server runs it, we watch."""
    p = context["params"]
    started = _hook("POST").run(endpoint, headers=_headers()).json()
    job_id = started["id"]
    deadline = time.monotonic() + int(p["timeout_seconds"])
    while True:
        job = _hook("GET").run(f"/admin/jobs/{job_id}", headers=_headers()).json()
        if job["status"] == "succeeded":
            print(f"job {job_id} ({endpoint}) succeeded: {json.dumps(job.get('result'))}")
            return job
        if job["status"] == "failed":
            raise RuntimeError(f"job {job_id} ({endpoint}) failed: {job.get('error')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} ({endpoint}) still running after {p['timeout_seconds']} s")
        time.sleep(float(p["poll_seconds"]))


def build_user_features(**context) -> dict:
    return _run_job("/admin/features/rebuild", **context)


def train_model(**context) -> dict:
    return _run_job("/admin/retrain", **context)


with DAG(
    dag_id="churn_pipeline",
    description="generate events -> build user features -> train, evaluate, gate, register",
    schedule="0 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={
        "users": Param(2000, type="integer", minimum=1),
        "days": Param(120, type="integer", minimum=7),
        "seed": Param(42, type="integer"),
        "end": Param("", type="string"),
        "poll_seconds": Param(2, type="number", minimum=0.1),
        "timeout_seconds": Param(3600, type="integer", minimum=1),
    },
    tags=["churn"],
) as dag:
    if MODE == "cli":
        from airflow.providers.standard.operators.bash import BashOperator

        end = "{{ ' --end ' ~ params.end if params.end else '' }}"
        gen = BashOperator(
            task_id="generate_events",
            bash_command=(
                f"{CHURN_BIN} generate-events --users {{{{ params.users }}}} --days {{{{ params.days }}}}"
                f" --seed {{{{ params.seed }}}}{end} | {CHURN_BIN} ingest -"
            ),
        )
        features = BashOperator(task_id="build_user_features", bash_command=f"{CHURN_BIN} build-features")
        train = BashOperator(task_id="train_model", bash_command=f"{CHURN_BIN} train")
    else:
        from airflow.providers.standard.operators.python import PythonOperator

        gen = PythonOperator(task_id="generate_events", python_callable=generate_events)
        features = PythonOperator(task_id="build_user_features", python_callable=build_user_features)
        train = PythonOperator(task_id="train_model", python_callable=train_model)

    gen >> features >> train
