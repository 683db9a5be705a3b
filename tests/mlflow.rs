//! The MLflow exporter against a real MLflow 3.17.2 server (scripts/mlflow.sh
//! on 127.0.0.1:15000; `CHURN_TEST_MLFLOW_URI` overrides). A missing server
//! fails loudly. Everything is read back through MLflow's own REST API.

#[path = "common/fixtures.rs"]
mod fixtures;

use std::time::Duration;

use churn::config::Settings;
use churn::startup::Services;
use serde_json::Value;

fn tracking_uri() -> String {
    std::env::var("CHURN_TEST_MLFLOW_URI").unwrap_or_else(|_| "http://127.0.0.1:15000".into())
}

use fixtures::unique;

async fn get(path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{}/{path}", tracking_uri()))
        .await
        .expect("MLflow reachable (scripts/mlflow.sh running?)");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn settings(dir: &std::path::Path, uri: &str, experiment: &str, model: &str) -> Settings {
    let mut s = Settings {
        data_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    s.mlflow.tracking_uri = uri.to_string();
    s.mlflow.experiment = experiment.to_string();
    s.mlflow.registered_model = model.to_string();
    s.mlflow.timeout_secs = 5;
    s.mlflow.attempts = 2;
    s
}

async fn seeded(s: Settings) -> Services {
    let services = Services::build_with(s, true).await.unwrap();
    fixtures::seed_store(&services, 1_000, 2).await;
    services
}

async fn alias_version(model: &str) -> Option<String> {
    let (status, v) = get(&format!(
        "api/2.0/mlflow/registered-models/alias?name={model}&alias=production"
    ))
    .await;
    (status == 200).then(|| {
        v["model_version"]["version"]
            .as_str()
            .unwrap_or("")
            .to_string()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_is_mirrored_to_mlflow_and_promotions_move_the_alias() {
    let (experiment, model) = (unique("churn_prediction"), unique("churn_model"));
    let dir = tempfile::tempdir().unwrap();
    let services = seeded(settings(dir.path(), &tracking_uri(), &experiment, &model)).await;

    let first = services.train.run().await.unwrap();
    if !first.promoted {
        // The gate is not under test here; promotion through the use case is.
        services
            .models
            .promote(first.version, "test")
            .await
            .unwrap();
    }
    let receipt = first.export.clone().expect("exporter configured");
    assert!(receipt.starts_with("mlflow run "), "{receipt}");

    // The experiment, the run with its params and metrics.
    let (status, exp) = get(&format!(
        "api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}"
    ))
    .await;
    assert_eq!(status, 200, "{exp}");
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = reqwest::Client::new()
        .post(format!("{}/api/2.0/mlflow/runs/search", tracking_uri()))
        .json(&serde_json::json!({ "experiment_ids": [exp_id] }))
        .send()
        .await
        .unwrap();
    let runs: Value = r.json().await.unwrap();
    let run = &runs["runs"][0];
    assert_eq!(run["info"]["status"], "FINISHED", "{run}");
    let metric = |key: &str| {
        run["data"]["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|x| x["key"] == key))
            .and_then(|x| x["value"].as_f64())
    };
    let param = |key: &str| {
        run["data"]["params"]
            .as_array()
            .and_then(|m| m.iter().find(|x| x["key"] == key))
            .and_then(|x| x["value"].as_str().map(str::to_string))
    };
    assert!((metric("auc").unwrap() - first.metrics.auc).abs() < 1e-9);
    assert!((metric("recency_baseline_auc").unwrap() - first.metrics.recency_auc).abs() < 1e-9);
    assert!(
        metric("pr_auc").is_some() && metric("log_loss").is_some() && metric("brier").is_some()
    );
    assert_eq!(param("churn_version").as_deref(), Some("1"));
    assert_eq!(param("horizon_days").as_deref(), Some("30"));
    assert_eq!(param("features").unwrap().split(',').count(), 54);

    // Artifacts: the very bytes the registry holds.
    let run_id = run["info"]["run_id"].as_str().unwrap();
    let (_, listing) = get(&format!(
        "api/2.0/mlflow/artifacts/list?run_id={run_id}&path=model"
    ))
    .await;
    let (_, registry_bytes) = services.registry.load(1).await.unwrap();
    let model_bin = listing["files"]
        .as_array()
        .and_then(|f| f.iter().find(|x| x["path"] == "model/model.bin"))
        .unwrap_or_else(|| panic!("model.bin listed: {listing}"));
    assert_eq!(
        model_bin["file_size"].as_u64(),
        Some(registry_bytes.len() as u64)
    );

    // The registered model version and the production alias.
    let (_, versions) = get(&format!(
        "api/2.0/mlflow/model-versions/search?filter=name%3D%27{model}%27"
    ))
    .await;
    assert_eq!(
        versions["model_versions"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );
    assert_eq!(
        alias_version(&model).await.as_deref(),
        Some("1"),
        "first version promoted"
    );

    // A second, forced promotion moves the alias; a rollback moves it back.
    let second = services.train.run().await.unwrap();
    assert!(second.promoted, "{}", second.decision);
    assert_eq!(alias_version(&model).await.as_deref(), Some("2"));
    services.models.rollback().await.unwrap();
    assert_eq!(alias_version(&model).await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mlflow_outage_never_fails_training_or_promotion() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &format!("http://127.0.0.1:{dead}"), "e", "m");
    s.mlflow.timeout_secs = 1;
    let services = seeded(s).await;
    let started = std::time::Instant::now();
    let report = services
        .train
        .run()
        .await
        .expect("training succeeds without MLflow");
    assert!(report.promoted, "{}", report.decision);
    let export = report.export.unwrap();
    assert!(
        export.contains("export failed") && export.contains(&dead.to_string()),
        "{export}"
    );
    assert_eq!(
        services
            .models
            .load_production()
            .await
            .unwrap()
            .unwrap()
            .metadata
            .version,
        report.version
    );
    eprintln!("training with MLflow down took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// The Python of the suite's MLflow venv (scripts/mlflow.sh).
fn mlflow_python() -> String {
    std::env::var("CHURN_TEST_MLFLOW_PYTHON")
        .unwrap_or_else(|_| "/var/tmp/churn/venv-mlflow/bin/python3".into())
}

/// `mlflow.pyfunc.load_model("models:/<name>@production")` in Python, on
/// the rows of `csv`: one probability per row, in order.
fn pyfunc_predict(model: &str, csv: &std::path::Path) -> Vec<f64> {
    let script = r#"
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(f"models:/{sys.argv[1]}@production")
df = pd.read_csv(sys.argv[2])
out = model.predict(df.drop(columns=["user_id"]))
print(json.dumps([float(p) for p in out]))
"#;
    let out = std::process::Command::new(mlflow_python())
        .args(["-c", script, model, csv.to_str().unwrap()])
        .env("MLFLOW_TRACKING_URI", tracking_uri())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} not runnable ({e}): scripts/mlflow.sh install",
                mlflow_python()
            )
        });
    assert!(
        out.status.success(),
        "python load_model/predict failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).expect("a JSON list of probabilities")
}

/// Every exported version is an MLflow pyfunc model: Python's
/// `mlflow.pyfunc.load_model("models:/<name>@production")` scores 10,000
/// exported rows as `/predict/batch` answers for the same users, within
/// 1e-9 after calibration, for a GBDT, a logistic model and a blend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_loads_each_model_kind_and_scores_like_predict_batch() {
    use churn::domain::model::ModelKind;
    let (experiment, model) = (unique("churn_pyfunc"), unique("churn_model"));
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &tracking_uri(), &experiment, &model);
    s.training.model_selection = churn::domain::training::ModelSelection::Gbdt;
    s.server.port = 0;
    s.server.registry_poll_ms = 100;
    s.schedule.enabled = false;
    // Served from the snapshot: the rows the test exports.
    s.features.live = false;
    let services = Services::build_with(s, true).await.unwrap();
    fixtures::seed_store(&services, 12_000, 5).await;
    let first = services.train.run().await.unwrap();
    assert!(first.promoted, "forced promotion");
    let gbdt = services.registry.load(first.version).await.unwrap().0;
    assert_eq!(gbdt.kind, ModelKind::Gbdt);

    // 10,000 users' rows of the serving snapshot, as float32 decimals.
    let snapshot = services
        .features
        .latest_snapshot(None)
        .await
        .unwrap()
        .expect("a snapshot");
    let users: Vec<u64> = snapshot.users_by_row().into_iter().take(10_000).collect();
    assert_eq!(users.len(), 10_000, "seeded enough users");
    let csv = dir.path().join("rows.csv");
    let mut text = format!("user_id,{}\n", snapshot.feature_names().join(","));
    for u in &users {
        let row = snapshot.features(*u).unwrap();
        let values: Vec<String> = row.iter().map(|v| format!("{}", *v as f32)).collect();
        text.push_str(&format!("{u},{}\n", values.join(",")));
    }
    std::fs::write(&csv, text).unwrap();

    let app = fixtures::serve(services.clone()).await;
    // A logistic model and a blend trained on the same rows, registered
    // with a Platt and an isotonic calibration: every kind and every
    // calibration goes through the Python evaluator.
    use churn::domain::calibration::Calibration;
    let rows = services.train.training_rows().await.unwrap();
    let mut versions = vec![(ModelKind::Gbdt, first.version)];
    for (kind, calibration) in [
        (ModelKind::Logistic, Calibration::Platt { a: 0.8, b: 0.1 }),
        (
            ModelKind::Blend,
            Calibration::Isotonic {
                thresholds: vec![0.0, 0.1, 0.3, 0.6, 1.0],
                values: vec![0.01, 0.08, 0.35, 0.55, 0.97],
            },
        ),
    ] {
        let fitted = services.trainer.train(kind, &rows.train).unwrap();
        let mut metadata = gbdt.clone();
        metadata.kind = kind;
        metadata.calibration = Some(calibration);
        let (registered, export) = services
            .models
            .register(metadata, fitted.to_bytes().unwrap())
            .await
            .unwrap();
        assert!(export.is_some_and(|e| e.starts_with("mlflow run ")));
        versions.push((kind, registered.version));
    }
    for (kind, version) in versions {
        services
            .models
            .promote(version, "pyfunc round trip")
            .await
            .unwrap();
        // Served here (registry poll) and aliased in MLflow.
        let mut served = Vec::new();
        for _ in 0..100 {
            served.clear();
            for chunk in users.chunks(1_000) {
                let body: Value = app
                    .client
                    .post(app.url("/predict/batch"))
                    .json(&serde_json::json!({ "user_ids": chunk }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                served.extend(body["predictions"].as_array().unwrap().iter().map(|p| {
                    (
                        p["model_version"].as_str().unwrap_or("").to_string(),
                        p["churn_probability"].as_f64().unwrap(),
                    )
                }));
            }
            if served.iter().all(|(v, _)| *v == version.to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(served.len(), users.len(), "{kind:?}: every user answered");
        assert!(
            served.iter().all(|(v, _)| *v == version.to_string()),
            "{kind:?}: version {version} served"
        );
        // MLflow's production alias is on the version exported for it.
        let (status, alias) = get(&format!(
            "api/2.0/mlflow/registered-models/alias?name={model}&alias=production"
        ))
        .await;
        assert_eq!(status, 200, "{alias}");
        let tags = alias["model_version"]["tags"].to_string();
        assert!(
            tags.contains(&format!("\"value\":\"{version}\"")),
            "{kind:?}: alias on churn version {version}: {alias}"
        );
        let python = pyfunc_predict(&model, &csv);
        assert_eq!(python.len(), users.len());
        let worst = served
            .iter()
            .zip(&python)
            .map(|((_, a), b)| (a - b).abs())
            .fold(0.0, f64::max);
        let calibration = services
            .registry
            .load(version)
            .await
            .unwrap()
            .0
            .calibration
            .map(|c| c.method().as_str());
        println!(
            "{kind:?} (version {version}, calibration {calibration:?}): \
             max |python - /predict/batch| = {worst:e} over {} users",
            users.len()
        );
        if kind != ModelKind::Gbdt {
            assert!(calibration.is_some(), "{kind:?}: calibrated");
        }
        assert!(worst <= 1e-9, "{kind:?}: python differs by {worst}");
        let spread = python.iter().cloned().fold(f64::INFINITY, f64::min)
            ..python.iter().cloned().fold(0.0, f64::max);
        assert!(
            spread.end - spread.start > 0.1,
            "{kind:?}: scores vary: {spread:?}"
        );
    }
    app.stop().await;
}
