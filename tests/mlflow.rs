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
