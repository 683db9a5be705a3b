//! The Airflow DAG `churn_pipeline` (airflow/dags/) run by a real Airflow
//! 3.3.2 (`airflow dags test`, venv and metadata DB from scripts/airflow.sh):
//! in API mode against a running churn server (every task succeeds and the
//! server ends with a new registered version serving predictions), and in
//! CLI mode running the `churn` binary. A missing Airflow fails loudly.

use std::time::Duration;

use churn::config::Settings;
use churn::startup::{Application, Services};
use secrecy::SecretString;
use serde_json::Value;

const TOKEN: &str = "airflow-test-token";

/// The Airflow binary, and a private copy of the prepared AIRFLOW_HOME
/// (migrated, DAG bundles synced by scripts/airflow.sh): two `dags test`
/// runs never share one SQLite metadata DB, so they cannot race on it.
fn airflow() -> (String, tempfile::TempDir) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} unset: run through scripts/test.sh"))
    };
    let airflow = var("CHURN_TEST_AIRFLOW_BIN");
    let prepared = std::path::PathBuf::from(var("CHURN_TEST_AIRFLOW_HOME"));
    assert!(
        std::path::Path::new(&airflow).exists(),
        "{airflow} missing: run scripts/airflow.sh"
    );
    let home = tempfile::tempdir().unwrap();
    let db = prepared.join("airflow.db");
    assert!(
        db.exists(),
        "{} missing: run scripts/airflow.sh",
        db.display()
    );
    std::fs::copy(&db, home.path().join("airflow.db")).unwrap();
    // Airflow writes a default airflow.cfg on first use; copy it if there.
    let cfg = prepared.join("airflow.cfg");
    if cfg.exists() {
        std::fs::copy(&cfg, home.path().join("airflow.cfg")).unwrap();
    }
    (airflow, home)
}

/// DAG params: midnight-anchored data, so the same events (and model) on
/// every run of a day.
fn conf() -> String {
    let end = churn::domain::time::floor_day(chrono::Utc::now().timestamp()) - 60;
    serde_json::json!({
        "users": 1000,
        "seed": 2,
        "days": 120,
        "end": churn::domain::time::format_rfc3339(end),
        "poll_seconds": 0.5,
        "timeout_seconds": 300,
    })
    .to_string()
}

/// Runs `airflow dags test churn_pipeline` with `envs`; (success, log).
/// Every task must have run either way.
fn dag_test(envs: &[(&str, String)]) -> (bool, String) {
    let (airflow, home) = airflow();
    let dags = concat!(env!("CARGO_MANIFEST_DIR"), "/airflow/dags");
    let mut cmd = std::process::Command::new(airflow);
    // The copied airflow.cfg still names the prepared DB: point at the copy.
    let db = format!("sqlite:///{}/airflow.db", home.path().display());
    cmd.args(["dags", "test", "churn_pipeline", "--conf", &conf()])
        .env("AIRFLOW_HOME", home.path())
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", db)
        .env("AIRFLOW__CORE__DAGS_FOLDER", dags)
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let run = cmd.output().unwrap();
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    for task in ["generate_events", "build_user_features", "train_model"] {
        assert!(log.contains(task), "{task} did not run:\n{log}");
    }
    (run.status.success(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_pipeline_dag_generates_builds_and_trains_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings {
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    s.server.admin_token = SecretString::from(TOKEN.to_string());
    s.server.registry_poll_ms = 0;
    s.schedule.enabled = false;
    let services = Services::build(s).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build_with_listener(services.clone(), listener)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    assert!(services.registry.list().await.unwrap().is_empty());

    let conn = base.clone();
    let (ok, log) = tokio::task::spawn_blocking(move || {
        dag_test(&[
            ("AIRFLOW_CONN_CHURN_API", conn),
            ("AIRFLOW_VAR_CHURN_ADMIN_TOKEN", TOKEN.into()),
            ("CHURN_DAG_MODE", "api".into()),
        ])
    })
    .await
    .unwrap();
    assert!(ok, "airflow dags test failed:\n{log}");

    // The server did the work: events stored, a snapshot, a registered version.
    let stats = services.events.stats().await.unwrap();
    assert!(stats.events > 100_000, "{stats:?}");
    let versions = services.registry.list().await.unwrap();
    assert_eq!(versions.len(), 1, "one training run registered one version");
    let latest = services.registry.alias("latest").await.unwrap().unwrap();
    assert_eq!(latest.version, 1);
    if let Some(production) = services.registry.alias("production").await.unwrap() {
        // Promoted (the gate passed): the hot-swapped model serves.
        let r = reqwest::Client::new()
            .post(format!("{base}/predict?user_id=5"))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["model_version"],
            production.version.to_string(),
            "{body}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// CLI mode: the tasks run the `churn` binary on the worker with its own
/// configuration (here a fresh data directory).
#[test]
fn churn_pipeline_dag_runs_the_cli_in_cli_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = dag_test(&[
        ("CHURN_DAG_MODE", "cli".into()),
        ("CHURN_BIN", env!("CARGO_BIN_EXE_churn").into()),
        ("CHURN_DATA_DIR", dir.path().display().to_string()),
    ]);
    assert!(ok, "airflow dags test (cli mode) failed:\n{log}");
    let version = dir
        .path()
        .join("registry/churn_model/versions/00000001/metadata.json");
    assert!(version.exists(), "no version registered by the CLI:\n{log}");
}
