//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, and graceful
//! shutdown.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use churn::startup::Services;

use crate::helpers::{
    Seed, error_body, load, settings, spawn, spawn_app, spawn_app_with, train_and_promote,
};

#[tokio::test]
async fn health_metrics_and_openapi() {
    let app = spawn_app(Seed::Trained).await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["model_version"], 1);

    app.predict("1").await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for name in [
        "churn_http_requests_total{route=\"/predict\",method=\"POST\",status=\"200\"}",
        "churn_http_request_duration_seconds_bucket{route=\"/predict\"",
        "churn_predictions_total",
        "churn_model_production_version",
        "churn_model_validation_auc",
        "churn_feature_snapshot_age_seconds",
        "churn_feature_build_duration_seconds",
        "churn_training_duration_seconds",
        "churn_training_last_success_timestamp_seconds",
        "churn_feature_build_last_success_timestamp_seconds",
        "churn_events_ingested_total",
    ] {
        assert!(text.contains(name), "missing {name}");
    }

    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["schemas"].get("Prediction").is_some());
    // Routes and their entries are registered together: every documented
    // operation is routed (never the router's 404), every admin one is
    // guarded (401 without the token) and documents it, every work route
    // documents the in-flight limit.
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 16, "{:?}", paths.keys());
    for (path, item) in paths {
        let concrete = path
            .replace("{version}", "1")
            .replace("{id}", "1")
            .replace("{user_id}", "1");
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let request = match method.as_str() {
                "get" => app.client.get(app.url(&concrete)),
                "post" => app.client.post(app.url(&concrete)),
                "delete" => app.client.delete(app.url(&concrete)),
                other => panic!("{other} {path}"),
            };
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["error_type"], "not_found",
                "{method} {path} is not routed"
            );
            if path.starts_with("/admin/") {
                assert_eq!(status, 401, "{method} {path} answers without the token");
                assert!(responses.contains_key("401"), "{method} {path}");
                assert!(responses.contains_key("429"), "{method} {path}");
            }
            if path.starts_with("/predict") || path == "/events" {
                assert!(responses.contains_key("429"), "{method} {path}");
                // The read and ingest tokens are optional: 401 only when set.
                assert!(responses.contains_key("401"), "{method} {path}");
                assert_ne!(status, 401, "{method} {path} is open by default");
            }
            if path == "/healthz" {
                assert!(!responses.contains_key("429"), "health is never shed");
            }
        }
    }
    app.stop().await;
}

/// Clients cannot mint metric series with made-up methods, and every
/// metric family in `/metrics` has its `# HELP` line (issue 13, findings 3
/// and 12, in part).
#[tokio::test]
async fn metric_labels_are_bounded_and_every_family_is_described() {
    let app = spawn_app(Seed::Nothing).await;
    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        let _ = app
            .client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
    }
    let text = app.metrics().await;
    assert!(
        !text.contains("method=\"M1X\""),
        "made-up methods are not labels"
    );
    assert!(text.contains("method=\"OTHER\""), "{text}");
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!families.is_empty());
    for f in families {
        assert!(
            text.contains(&format!("# HELP {f} ")),
            "{f} has no HELP line"
        );
    }
}

/// Issue 13, finding 9: when the `production` alias names a model this
/// server cannot load, `/readyz` says so (503) while the old model keeps
/// serving, and recovers when the alias is put back.
#[tokio::test]
async fn readiness_reports_a_production_alias_that_cannot_be_loaded() {
    use churn::application::ports::AliasRecord;
    let app = spawn_app_with(Seed::Trained, |s| s.server.registry_poll_ms = 200).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let registry = app.services.registry.clone();
    let good = registry.alias("production").await.unwrap().unwrap();
    let broken = AliasRecord {
        version: 999,
        history: vec![good.version],
        updated_at: good.updated_at.clone(),
        reason: "points at a version that does not exist".into(),
        fence: None,
    };
    registry
        .set_alias("production", broken.clone(), Some(&good))
        .await
        .unwrap();
    let mut body = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            body = r.json().await.unwrap();
            break;
        }
    }
    let problems = body["problems"].to_string();
    assert!(problems.contains("version 999"), "{body}");
    assert_eq!(
        body["model_version"], good.version,
        "the old model serves on"
    );
    let p = app
        .client
        .post(app.url("/predict?user_id=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(p.status(), 200);
    registry
        .set_alias("production", good.clone(), Some(&broken))
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "ready again once the alias is good");
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let app = spawn_app(Seed::Nothing).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // Send the headers and half the body, then ask the server to stop.
    let body = "{\"user_id\":7,\"event_time\":\"2025-12-26 18:00:00\",\"event_type\":\"login\"}";
    let (first, second) = body.split_at(body.len() / 2);
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused once the server stopped accepting...
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    assert!(!app.server.is_finished());
    // ...but the in-flight request completes and is stored.
    conn.write_all(second.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"accepted\":1"), "{response}");
    tokio::time::timeout(Duration::from_secs(10), app.server)
        .await
        .expect("server stops after in-flight work")
        .unwrap()
        .unwrap();
    assert_eq!(app.services.events.stats().await.unwrap().events, 1);
}

/// A server started with another feature spec than its production model
/// was trained on says so, and what to do, instead of "train one".
#[tokio::test]
async fn a_model_trained_on_another_spec_is_named_not_called_missing() {
    let dir = tempfile::tempdir().unwrap();
    let trained = Services::build(settings(dir.path())).await.unwrap();
    load(&trained, 400, 9, false).await;
    let version = train_and_promote(&trained).await;
    drop(trained);

    let spec = dir.path().join("other.toml");
    std::fs::write(
        &spec,
        "[[feature]]\nname = \"events_total\"\naggregation = \"count\"\n\n\
         [[feature]]\nname = \"last_event_days_ago\"\naggregation = \"days_since_last\"\n",
    )
    .unwrap();
    let mut s = settings(dir.path());
    s.features.spec_file = spec.display().to_string();
    let services = Services::build(s).await.unwrap();
    let app = spawn(services, None).await;
    let body = error_body(app.predict("1").await, 503, "production_model_not_servable").await;
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "version {version} was trained on the feature spec"
        )) && message.contains("(2 features)")
            && message.contains("features.spec_file"),
        "{body}"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    app.stop().await;
    drop(dir);
}
