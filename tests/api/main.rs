//! The HTTP API over real sockets: every route, every documented error
//! status, admin auth, hot swap under load and graceful shutdown.

mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use helpers::{Seed, TOKEN, TestApp, error_body, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn predict_answers_in_the_seed_shape() {
    let app = spawn_app(Seed::Trained).await;
    let response = app.predict("42").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "user_id",
        "churn_probability",
        "model_version",
        "timestamp",
        "features_as_of",
    ] {
        assert!(keys.contains(&key), "{body}");
    }
    assert_eq!(body["user_id"], 42);
    let p = body["churn_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p) && p != 0.0 && p != 1.0, "{p}");
    assert_eq!(body["model_version"], "1");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    // Probabilities differ between users: it is a real model, not a constant.
    let mut seen = std::collections::HashSet::new();
    for u in 1..=40 {
        let r = app.predict(&u.to_string()).await;
        if r.status() == 200 {
            let b: Value = r.json().await.unwrap();
            seen.insert(b["churn_probability"].as_f64().unwrap().to_bits());
        }
    }
    assert!(seen.len() > 10, "{} distinct probabilities", seen.len());

    // Served probabilities (from the precomputed score table) equal the
    // production model run live on the stored features.
    let model = app
        .services
        .models
        .load_production()
        .await
        .unwrap()
        .unwrap();
    let snapshot = app
        .services
        .features
        .latest_snapshot()
        .await
        .unwrap()
        .unwrap();
    for u in [1u64, 2, 3, 42] {
        let Some(row) = snapshot.features(u) else {
            continue;
        };
        let live = model.classifier.predict_proba(&row).unwrap()[0];
        let served: Value = app.predict(&u.to_string()).await.json().await.unwrap();
        assert_eq!(
            served["churn_probability"].as_f64().unwrap(),
            live,
            "user {u}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn predict_errors_have_the_right_status() {
    let app = spawn_app(Seed::Trained).await;
    let body = error_body(app.predict("987654").await, 404, "unknown_user").await;
    assert!(body["error"].as_str().unwrap().contains("987654"));
    // Any other text is a string id: unknown here, not malformed.
    let body = error_body(app.predict("abc").await, 404, "unknown_user").await;
    assert!(body["error"].as_str().unwrap().contains("abc"));
    error_body(app.predict("").await, 400, "bad_request").await;
    error_body(app.predict(&"x".repeat(300)).await, 400, "bad_request").await;
    let r = app.client.post(app.url("/predict")).send().await.unwrap();
    error_body(r, 400, "bad_request").await;
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    error_body(r, 404, "not_found").await;
    app.stop().await;

    // Features but no model: 503 that says how to train one.
    let app = spawn_app(Seed::FeaturesOnly).await;
    let body = error_body(app.predict("1").await, 503, "no_production_model").await;
    assert!(body["error"].as_str().unwrap().contains("retrain"));
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["model_loaded"], false);
    assert_eq!(ready["features_loaded"], true);
    app.stop().await;
}

#[tokio::test]
async fn batch_predictions_limits_and_partial_failures() {
    let app = spawn_app_with(Seed::Trained, |s| s.server.max_batch_users = 5).await;
    let r = app
        .client
        .post(app.url("/predict/batch"))
        .json(&json!({"user_ids": [1, 2, 3, 999999]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let n = body["predictions"].as_array().unwrap().len();
    assert_eq!(n + body["errors"].as_array().unwrap().len(), 4);
    assert!(n >= 2, "{body}");
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["user_id"] == 999999 && e["error_type"] == "unknown_user")
    );
    // Batch scores equal single scores (same model, same features).
    let single: Value = app.predict("1").await.json().await.unwrap();
    let batched = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == 1)
        .unwrap();
    assert_eq!(single["churn_probability"], batched["churn_probability"]);

    let r = app
        .client
        .post(app.url("/predict/batch"))
        .json(&json!({"user_ids": [1, 2, 3, 4, 5, 6]}))
        .send()
        .await
        .unwrap();
    error_body(r, 413, "payload_too_large").await;
    let r = app
        .client
        .post(app.url("/predict/batch"))
        .header("content-type", "application/json")
        .body("{\"user_ids\": \"all\"}")
        .send()
        .await
        .unwrap();
    error_body(r, 400, "bad_request").await;
    app.stop().await;
}

#[tokio::test]
async fn events_accept_arrays_and_ndjson_and_report_rejects() {
    let app = spawn_app_with(Seed::Nothing, |s| s.server.max_body_bytes = 4096).await;
    let array = json!([
        {"user_id": 2, "event_time": "2025-12-26 18:00:00", "event_type": "login", "session_id": "abc"},
        {"user_id": 2, "event_time": "2025-12-26 18:05:00", "event_type": "purchase", "session_id": "def", "amount": 9.5},
        {"user_id": null, "event_time": "2025-12-26 18:05:00", "event_type": "view"},
        17
    ]);
    let r = app
        .client
        .post(app.url("/events"))
        .json(&array)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"], 2, "{body}");
    assert_eq!(body["errors"][0]["index"], 2);
    assert_eq!(body["errors"][0]["field"], "user_id");
    assert_eq!(body["errors"][1]["field"], "json");

    let ndjson = "{\"user_id\":2,\"event_time\":\"2025-12-26 18:00:00\",\"event_type\":\"login\",\"session_id\":\"abc\"}\n\
                  \n\
                  {\"user_id\":3,\"event_time\":\"2025-12-27T10:00:00Z\",\"event_type\":\"view\"}\n\
                  {\"user_id\":3,\"event_time\":\"yesterday\",\"event_type\":\"view\"}\n";
    let r = app
        .client
        .post(app.url("/events"))
        .body(ndjson)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["duplicates"], 1, "{body}");
    assert_eq!(body["errors"][0]["index"], 4, "{body}");
    assert_eq!(body["errors"][0]["field"], "event_time");
    assert_eq!(app.services.events.stats().await.unwrap().events, 3);

    let big = "x".repeat(5000);
    let r = app
        .client
        .post(app.url("/events"))
        .body(big)
        .send()
        .await
        .unwrap();
    error_body(r, 413, "payload_too_large").await;
    let r = app
        .client
        .post(app.url("/events"))
        .body("[1, 2")
        .send()
        .await
        .unwrap();
    error_body(r, 400, "bad_request").await;

    let metrics = app.metrics().await;
    assert!(metrics.contains("churn_events_ingested_total"), "{metrics}");
    assert!(
        metrics.contains("churn_events_rejected_total{field=\"event_time\"}"),
        "{metrics}"
    );
    app.stop().await;
}

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
        let concrete = path.replace("{version}", "1").replace("{id}", "1");
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let request = match method.as_str() {
                "get" => app.client.get(app.url(&concrete)),
                "post" => app.client.post(app.url(&concrete)),
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
                assert!(!responses.contains_key("401"), "{method} {path}");
            }
            if path == "/healthz" {
                assert!(!responses.contains_key("429"), "health is never shed");
            }
        }
    }
    app.stop().await;
}

/// The plain `?user_id=N` request is answered before the router (issue 16);
/// the same request with another parameter goes through the router. Both
/// must give the same status, headers and JSON, and both must be counted.
#[tokio::test]
async fn the_fast_path_answers_as_the_router_does() {
    let app = spawn_app(Seed::Trained).await;
    let counts = |text: &str| -> [u64; 2] {
        ["200", "404"].map(|status| {
            let metric = format!(
                "churn_http_requests_total{{route=\"/predict\",method=\"POST\",status=\"{status}\"}}"
            );
            text.lines()
                .find_map(|l| l.strip_prefix(metric.as_str()))
                .map_or(0, |v| v.trim().parse().unwrap())
        })
    };
    let before = counts(&app.metrics().await);
    let mut answered = [0, 0];
    for user in ["1", "2", "42", "0042", "987654", "u-abc"] {
        let fast = app.predict(user).await;
        let routed = app
            .client
            .post(app.url(&format!("/predict?user_id={user}&explain=false")))
            .send()
            .await
            .unwrap();
        assert_eq!(fast.status(), routed.status(), "user {user}");
        let headers = |r: &reqwest::Response| -> Vec<(String, String)> {
            let mut h: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter(|(k, _)| *k != "date")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            h.sort();
            h
        };
        let status = fast.status();
        let fast_headers = headers(&fast);
        let routed_headers = headers(&routed);
        let mut fast: Value = fast.json().await.unwrap();
        let mut routed: Value = routed.json().await.unwrap();
        fast.as_object_mut().unwrap().remove("timestamp");
        routed.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(fast, routed, "user {user}");
        // Same JSON, so the same length too.
        assert_eq!(fast_headers, routed_headers, "user {user}");
        match status.as_u16() {
            200 => answered[0] += 2,
            404 => {
                assert_eq!(fast["error_type"], "unknown_user", "{fast}");
                answered[1] += 2;
            }
            other => panic!("user {user}: status {other}"),
        }
    }
    assert!(answered[0] >= 4 && answered[1] == 4, "{answered:?}");
    let after = counts(&app.metrics().await);
    assert_eq!(
        [after[0] - before[0], after[1] - before[1]],
        answered,
        "both paths counted"
    );

    // Not the fast path's to answer: still answered by the router.
    error_body(app.predict("").await, 400, "bad_request").await;
    let r = app
        .client
        .post(app.url("/predict?user_id=1"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn admin_requires_the_token() {
    let app = spawn_app(Seed::Trained).await;
    let r = app
        .client
        .get(app.url("/admin/models"))
        .send()
        .await
        .unwrap();
    error_body(r, 401, "unauthorized").await;
    let r = app
        .client
        .get(app.url("/admin/models"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    error_body(r, 401, "unauthorized").await;
    let r = app
        .client
        .get(app.url("/admin/models"))
        .bearer_auth(format!("{TOKEN}x"))
        .send()
        .await
        .unwrap();
    error_body(r, 401, "unauthorized").await;
    let r = app.admin_get("/admin/models").await;
    assert_eq!(r.status(), 200);
    let models: Value = r.json().await.unwrap();
    assert_eq!(models[0]["version"], 1);
    assert!(
        models[0]["aliases"]
            .as_array()
            .unwrap()
            .contains(&json!("production"))
    );
    app.stop().await;

    // No token configured: admin routes are closed, not open.
    let app = spawn_app_with(Seed::Nothing, |s| {
        s.server.admin_token = String::new().into()
    })
    .await;
    let r = app
        .client
        .post(app.url("/admin/retrain"))
        .send()
        .await
        .unwrap();
    error_body(r, 403, "admin_disabled").await;
    app.stop().await;
}

#[tokio::test]
async fn jobs_promote_rollback_and_conflicts() {
    let app = spawn_app(Seed::Trained).await;
    let r = app.admin_post("/admin/features/rebuild").await;
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    let done = app.wait_job(job["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["result"]["users"].as_u64().unwrap() > 400);

    let first = app.admin_post("/admin/retrain").await;
    assert_eq!(first.status(), 202);
    // A second retrain while the first runs is refused, not queued.
    error_body(app.admin_post("/admin/retrain").await, 409, "job_running").await;
    let job: Value = first.json().await.unwrap();
    let done = app.wait_job(job["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["version"], 2);

    error_body(app.admin_get("/admin/jobs/12345").await, 404, "unknown_job").await;
    error_body(
        app.admin_post("/admin/models/77/promote").await,
        404,
        "unknown_version",
    )
    .await;
    error_body(
        app.admin_post("/admin/models/x/promote").await,
        400,
        "bad_request",
    )
    .await;

    let r = app.admin_post("/admin/models/1/promote").await;
    assert_eq!(r.status(), 200);
    let v: Value = app.predict("1").await.json().await.unwrap();
    assert_eq!(v["model_version"], "1");
    let r = app.admin_post("/admin/models/rollback").await;
    assert_eq!(r.status(), 200);
    let v: Value = app.predict("1").await.json().await.unwrap();
    assert_eq!(v["model_version"], "2");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrain_swaps_the_model_under_load_with_zero_failures() {
    let app = Arc::new(spawn_app(Seed::Trained).await);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let saw_v2 = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..8u64 {
        let (app, stop, ok, failed, saw_v2) = (
            app.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            saw_v2.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let user = 1 + (worker * 31 + i) % 300;
                match app
                    .client
                    .post(app.url(&format!("/predict?user_id={user}")))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 || r.status() == 404 => {
                        if r.status() == 200 {
                            let b: Value = r.json().await.unwrap();
                            if b["model_version"] == "2" {
                                saw_v2.store(true, Ordering::Relaxed);
                            }
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job: Value = app.admin_post("/admin/retrain").await.json().await.unwrap();
    let done = app.wait_job(job["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["reload"]["outcome"], "swapped", "{done}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 200, "load too light to mean anything: {ok}");
    assert!(
        saw_v2.load(Ordering::Relaxed),
        "no answer came from the retrained model"
    );
    let after: Value = app.predict("1").await.json().await.unwrap();
    assert_eq!(after["model_version"], "2");
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

#[tokio::test]
async fn admin_generate_events_validates_and_stores_idempotently() {
    let app = spawn_app(Seed::Nothing).await;
    let post = |body: Value| {
        app.client
            .post(app.url("/admin/events/generate"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    // Bad input: a JSON error naming what is wrong, nothing stored.
    let e = error_body(post(json!({"users": 0})).await.unwrap(), 400, "bad_request").await;
    assert!(e.to_string().contains("users"), "{e}");
    error_body(post(json!({"days": 3})).await.unwrap(), 400, "bad_request").await;
    error_body(
        post(json!({"end": "yesterday"})).await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    let r = post(json!({"users": 5, "colour": "red"})).await.unwrap();
    assert!(
        r.status().is_client_error(),
        "unknown fields are refused: {}",
        r.status()
    );
    assert_eq!(app.services.events.stats().await.unwrap().events, 0);
    // Unauthenticated: refused.
    let r = app
        .client
        .post(app.url("/admin/events/generate"))
        .json(&json!({"users": 5}))
        .send()
        .await
        .unwrap();
    error_body(r, 401, "unauthorized").await;

    // Good input, twice with the same seed and end: the second run only
    // finds duplicates (event identity), so nothing is counted twice.
    let body = json!({"users": 30, "seed": 7, "end": "2026-06-01T00:00:00Z"});
    let first: Value = post(body.clone()).await.unwrap().json().await.unwrap();
    assert!(first["inserted"].as_u64().unwrap() > 100, "{first}");
    let second: Value = post(body).await.unwrap().json().await.unwrap();
    assert_eq!(second["inserted"], 0, "{second}");
    assert_eq!(second["duplicates"], first["read"], "{second}");
    assert_eq!(
        app.services.events.stats().await.unwrap().events,
        first["inserted"].as_u64().unwrap()
    );
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
    let app = spawn_app_with(Seed::Trained, |s| s.server.registry_poll_secs = 1).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let registry = app.services.registry.clone();
    let good = registry.alias("production").await.unwrap().unwrap();
    let broken = AliasRecord {
        version: 999,
        history: vec![good.version],
        updated_at: good.updated_at.clone(),
        reason: "points at a version that does not exist".into(),
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

/// Issue 14, explanations: `explain=true` adds the top-k contributions;
/// base value + every contribution = logit(probability) to 1e-6, on
/// `/predict` and `/predict/batch`; importance is in `/admin/models`.
#[tokio::test]
async fn explanations_sum_to_the_logit_of_the_probability() {
    let app = spawn_app(Seed::Trained).await;
    let post = |path: String| {
        let client = app.client.clone();
        async move {
            let r = client.post(path).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, plain) = post(app.url("/predict?user_id=5")).await;
    assert_eq!(status, 200, "{plain}");
    assert!(plain.get("explanation").is_none(), "only when asked");
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let check = |body: &Value, k: usize| {
        let e = &body["explanation"];
        let listed = e["contributions"].as_array().unwrap();
        assert_eq!(listed.len(), k, "{body}");
        let mags: Vec<f64> = listed
            .iter()
            .map(|c| c["contribution"].as_f64().unwrap().abs())
            .collect();
        assert!(
            mags.windows(2).all(|w| w[0] >= w[1]),
            "sorted by |c|: {mags:?}"
        );
        let total = e["base_value"].as_f64().unwrap()
            + listed
                .iter()
                .map(|c| c["contribution"].as_f64().unwrap())
                .sum::<f64>()
            + e["rest"].as_f64().unwrap();
        // With a calibration kept, explanations add up to the raw score.
        let p = body["raw_probability"]
            .as_f64()
            .or(body["churn_probability"].as_f64())
            .unwrap();
        assert!((total - logit(p)).abs() < 1e-6, "{total} vs {}", logit(p));
        assert!(
            listed
                .iter()
                .all(|c| c["feature"].is_string() && c["value"].is_number())
        );
    };
    let (_, explained) = post(app.url("/predict?user_id=5&explain=true")).await;
    check(&explained, 5);
    let p0 = plain["churn_probability"].as_f64().unwrap();
    let p1 = explained["churn_probability"].as_f64().unwrap();
    // Tree sums in another order (f32 leaves): equal to far below any use.
    assert!((p0 - p1).abs() < 1e-6, "the same probability: {p0} vs {p1}");
    let n = app.services.spec.names().len();
    let (_, all) =
        post(app.url(&format!("/predict?user_id=5&explain=true&top_k={}", n + 10))).await;
    check(&all, n);
    assert!(
        all["explanation"]["rest"].as_f64().unwrap().abs() < 1e-12,
        "nothing left out"
    );
    let (status, _) = post(app.url("/predict?user_id=5&top_k=3")).await;
    assert_eq!(status, 400, "top_k needs explain");
    let (status, _) = post(app.url("/predict?user_id=5&explain=true&top_k=0")).await;
    assert_eq!(status, 400);

    let batch: Value = app
        .client
        .post(app.url("/predict/batch"))
        .json(&json!({"user_ids": [1, 2, 5, 999999], "explain": true, "top_k": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let predictions = batch["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3, "{batch}");
    for p in predictions {
        check(p, 3);
    }
    assert_eq!(batch["errors"][0]["error_type"], "unknown_user");

    let models: Value = app
        .client
        .get(app.url("/admin/models"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let importance = models[0]["feature_importance"].as_array().unwrap();
    assert_eq!(importance.len(), n, "{models}");
    let total: f64 = importance
        .iter()
        .map(|f| f["importance"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-9);
    app.stop().await;
}

/// Issue 14, the call list: `/admin/at-risk` ranks every user of the
/// snapshot, most likely to churn first, each with reasons.
#[tokio::test]
async fn at_risk_lists_the_highest_scores_first_with_reasons() {
    let app = spawn_app(Seed::Trained).await;
    let get = |q: &str| {
        app.client
            .get(app.url(&format!("/admin/at-risk{q}")))
            .bearer_auth(TOKEN)
            .send()
    };
    let list: Value = get("?limit=10&top_k=2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 10);
    let p: Vec<f64> = list
        .iter()
        .map(|x| x["churn_probability"].as_f64().unwrap())
        .collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
    assert!(
        list.iter()
            .all(|x| x["explanation"]["contributions"].as_array().unwrap().len() == 2)
    );
    // No user of a batch of 1,000 scores above the top of the list.
    let ids: Vec<u64> = (1..=1_000).collect();
    let batch: Value = app
        .client
        .post(app.url("/predict/batch"))
        .json(&json!({ "user_ids": ids }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let best = batch["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["churn_probability"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best <= p[0] + 1e-6, "{best} > {}", p[0]);
    assert_eq!(get("?limit=0").await.unwrap().status(), 400);
    assert_eq!(get("?limit=100000").await.unwrap().status(), 400);
    let anonymous = app
        .client
        .get(app.url("/admin/at-risk"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    app.stop().await;
}

async fn admin_json(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app.admin_get(path).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Polls `/admin/monitoring` until it reports a snapshot other than `not`.
async fn monitoring_after(app: &TestApp, not: Option<&str>) -> Value {
    for _ in 0..300 {
        let (status, body) = admin_json(app, "/admin/monitoring").await;
        if status == 200 && not.is_none_or(|n| body["features_as_of"] != n) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no drift report");
}

fn psi_of(report: &Value, feature: &str) -> f64 {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == feature)
        .unwrap_or_else(|| panic!("{feature} missing: {report}"))["psi"]
        .as_f64()
        .unwrap()
}

/// Issue 14, drift: every user gets one hand-made purchase worth 50,000
/// inside the trained-on period (the data's end does not move). After the
/// rebuild, the purchase-amount feature's PSI is far above the threshold
/// (alert, gauge), a feature the purchases cannot touch stays near 0.
#[tokio::test]
async fn drift_flags_a_shifted_feature_and_not_an_unshifted_one() {
    let app = spawn_app(Seed::Trained).await;
    let before = monitoring_after(&app, None).await;
    assert!(psi_of(&before, "purchase_amount_total") < 0.1, "{before}");
    assert!(before["prediction_psi"].as_f64().unwrap() < 0.1, "{before}");
    assert!(
        before["new_user_share"].as_f64().unwrap() < 0.05,
        "{before}"
    );
    // Snapshots are told apart by their as-of second, and seeding, training
    // and the first report can all fall within one: the rebuild must start
    // in a later second, or `monitoring_after` would wait for a change it
    // cannot see.
    let seeded =
        churn::domain::time::parse_timestamp(before["features_as_of"].as_str().unwrap()).unwrap();
    while chrono::Utc::now().timestamp() <= seeded {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stats = app.services.events.stats().await.unwrap();
    let at = stats.last_event_time.unwrap() - 3_600;
    let when = churn::domain::time::format_rfc3339(at);
    let body: String = (1..=1_000)
        .map(|u| {
            json!({"user_id": u, "event_time": when, "event_type": "purchase", "amount": 50_000.0})
                .to_string()
                + "\n"
        })
        .collect();
    let r = app
        .client
        .post(app.url("/events"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let job: Value = app
        .admin_post("/admin/features/rebuild")
        .await
        .json()
        .await
        .unwrap();
    let done = app.wait_job(job["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let after = monitoring_after(&app, before["features_as_of"].as_str()).await;
    let threshold = after["thresholds"]["feature_psi"].as_f64().unwrap();
    let shifted = psi_of(&after, "purchase_amount_total");
    assert!(shifted > threshold, "shifted: {shifted} <= {threshold}");
    let unshifted = psi_of(&after, "support_ticket_count_90d");
    assert!(unshifted < 0.02, "unshifted: {unshifted}");
    eprintln!(
        "drift: purchase_amount_total PSI {shifted:.3} (threshold {threshold}), \
         support_ticket_count_90d {unshifted:.5}, prediction PSI {:.3}",
        after["prediction_psi"].as_f64().unwrap()
    );
    assert_eq!(after["alert"], true);
    let flagged: Vec<&str> = after["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["alert"] == true)
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert!(flagged.contains(&"purchase_amount_total"), "{flagged:?}");
    assert!(!flagged.contains(&"support_ticket_count_90d"));
    let metrics = app.metrics().await;
    assert!(metrics.contains("churn_drift_alert 1"), "{metrics}");
    assert!(metrics.contains("churn_feature_psi{feature=\"purchase_amount_total\"}"));
    assert!(metrics.contains("churn_prediction_psi "));
    app.stop().await;
}

/// Issue 14, calibration: whatever the method, it is applied exactly when it
/// lowered log loss on the rows used for neither fit, the training report
/// has both figures and a ten-bin reliability table, and predictions carry
/// `raw_probability` (mapped through the kept calibration) only then.
#[tokio::test]
async fn calibration_is_kept_only_when_it_lowers_held_out_log_loss() {
    for method in ["platt", "isotonic", "none"] {
        let app = spawn_app_with(Seed::Trained, |s| {
            s.training.calibration = serde_json::from_value(json!(method)).unwrap();
        })
        .await;
        let (_, models) = admin_json(&app, "/admin/models").await;
        let m = &models[0];
        let report = &m["report"]["calibration"];
        assert_eq!(report["method"], method, "{report}");
        let reliability = m["report"]["reliability"].as_array().unwrap();
        assert_eq!(reliability.len(), 10);
        let counted: u64 = reliability
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, report["evaluated_rows"].as_u64().unwrap());
        let raw = report["raw_logloss"].as_f64().unwrap();
        let applied = report["applied"].as_bool().unwrap();
        match report["calibrated_logloss"].as_f64() {
            Some(cal) => assert_eq!(applied, cal < raw, "{method}: {report}"),
            None => assert!(!applied && method == "none", "{report}"),
        }
        assert_eq!(m["calibration"].is_object(), applied, "{method}: {m}");
        assert!(report["decision"].as_str().unwrap().contains(if applied {
            "kept"
        } else if method == "none" {
            "off"
        } else {
            "dropped"
        }));
        let p: Value = app
            .client
            .post(app.url("/predict?user_id=7"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(p.get("raw_probability").is_some(), applied, "{method}: {p}");
        if applied && method == "platt" {
            let (a, b) = (
                m["calibration"]["a"].as_f64().unwrap(),
                m["calibration"]["b"].as_f64().unwrap(),
            );
            let r = p["raw_probability"].as_f64().unwrap();
            let z = a * (r / (1.0 - r)).ln() + b;
            let expected = 1.0 / (1.0 + (-z).exp());
            assert!(
                (p["churn_probability"].as_f64().unwrap() - expected).abs() < 1e-9,
                "{p}"
            );
        }
        eprintln!(
            "calibration {method}: applied {applied}, {}",
            report["decision"]
        );
        app.stop().await;
    }
}

/// One body is one delivery: identical events in it are distinct events,
/// and the same body sent again (a client's retry) stores nothing new.
/// Refunds (negative amounts) are stored.
#[tokio::test]
async fn identical_events_of_a_body_are_kept_and_a_resent_body_is_redelivery() {
    let app = spawn_app(Seed::Nothing).await;
    let line = "{\"user_id\":\"u-7\",\"event_time\":\"2025-12-26 18:00:00\",\"event_type\":\"purchase\",\"amount\":-4.5}\n";
    let body = line.repeat(3);
    let post = || {
        app.client
            .post(app.url("/events"))
            .body(body.clone())
            .send()
    };
    let first: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(
        (&first["accepted"], &first["duplicates"]),
        (&json!(3), &json!(0)),
        "{first}"
    );
    let again: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(
        (&again["accepted"], &again["duplicates"]),
        (&json!(0), &json!(3)),
        "{again}"
    );
    assert_eq!(app.services.events.stats().await.unwrap().events, 3);
    app.stop().await;
}

/// String ids end to end: ingested as UUIDs, trained on, served by
/// `/predict` (the fast path and the router, with explanations), by
/// `/predict/batch` next to integer ids, and listed by name in
/// `/admin/at-risk`.
#[tokio::test]
async fn string_user_ids_are_served_end_to_end() {
    let app = spawn_app(Seed::TrainedWithNames).await;
    let list: Value = app
        .admin_get("/admin/at-risk?limit=5&top_k=2")
        .await
        .json()
        .await
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 5, "{list:?}");
    let uuid = list[0]["user_id"]
        .as_str()
        .expect("a name, not a key")
        .to_string();
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(uuid.matches('-').count(), 4, "{uuid}");
    // The fast path (plain query) and the router (with explain) agree.
    let plain: Value = app.predict(&uuid).await.json().await.unwrap();
    assert_eq!(plain["user_id"], json!(uuid), "{plain}");
    let explained: Value = app
        .predict(&format!("{uuid}&explain=true&top_k=3"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(explained["user_id"], json!(uuid), "{explained}");
    // The explained answer runs the model live; the plain one reads the
    // score table: the same probability up to float rounding.
    assert!(
        (explained["churn_probability"].as_f64().unwrap()
            - plain["churn_probability"].as_f64().unwrap())
        .abs()
            < 1e-6,
        "{explained}"
    );
    assert_eq!(
        explained["explanation"]["contributions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let p = |v: &Value| v["churn_probability"].as_f64().unwrap();
    assert!((p(&list[0]) - p(&plain)).abs() < 1e-6, "{plain}");
    // An unknown name: 404 naming it; ids of both kinds in one batch.
    let r = app.predict("no-such-user").await;
    let body = error_body(r, 404, "unknown_user").await;
    assert!(
        body["error"].as_str().unwrap().contains("no-such-user"),
        "{body}"
    );
    let batch: Value = app
        .client
        .post(app.url("/predict/batch"))
        .json(&json!({ "user_ids": [uuid, 17], "explain": true, "top_k": 1 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(batch["predictions"][0]["user_id"], json!(uuid), "{batch}");
    assert_eq!(batch["errors"][0]["user_id"], json!(17), "{batch}");
    // A name that needs URL encoding goes through the router.
    let r = app
        .client
        .post(app.url("/predict"))
        .query(&[("user_id", "a b&c")])
        .send()
        .await
        .unwrap();
    let body = error_body(r, 404, "unknown_user").await;
    assert!(body["error"].as_str().unwrap().contains("a b&c"), "{body}");
    app.stop().await;
}
