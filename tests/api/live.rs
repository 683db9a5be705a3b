//! Live features over HTTP: an event posted to `/events` changes that
//! user's `/predict` answer on the next request, exactly as a batch build
//! as of the answer's time would; new users appear; the consistency check
//! moves on a forced mismatch; bounds fall back to the snapshot.

use churn::domain::features::FeatureSpec;
use churn::domain::snapshot::quantize;
use serde_json::{Value, json};

use crate::helpers::{Seed, TestApp, spawn_app, spawn_app_with};

/// The production model run on the user's features evaluated from the
/// store, as of `as_of`: what a batch build as of that time would serve.
async fn batch_probability(app: &TestApp, user: u64, as_of: i64) -> Option<f64> {
    let spec = FeatureSpec::standard();
    let events = app
        .services
        .features
        .user_events(&spec, user, usize::MAX)
        .await
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    if !spec.evaluate(&events, as_of, &mut out) {
        return None;
    }
    let values: Vec<f64> = out.into_iter().map(quantize).collect();
    let model = app
        .services
        .models
        .load_production()
        .await
        .unwrap()
        .unwrap();
    Some(model.classifier.predict_proba(&values).unwrap()[0])
}

async fn predict(app: &TestApp, user: &str) -> Value {
    let r = app.predict(user).await;
    assert_eq!(r.status(), 200, "{user}");
    r.json().await.unwrap()
}

fn as_of(body: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(body["features_as_of"].as_str().unwrap())
        .unwrap()
        .timestamp()
}

/// The as-of time of the snapshot the app serves.
async fn snapshot_as_of(app: &TestApp) -> i64 {
    app.services
        .features
        .latest_snapshot(None)
        .await
        .unwrap()
        .unwrap()
        .as_of()
}

/// A live-vs-batch consistency check run now.
async fn check_now(app: &TestApp) -> Value {
    app.admin_post("/admin/features/consistency")
        .await
        .json()
        .await
        .unwrap()
}

async fn post_events(app: &TestApp, events: Value) {
    let r = app
        .client
        .post(app.url("/events"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["rejected"], 0, "{body}");
}

#[tokio::test]
async fn an_event_posted_changes_the_next_prediction_as_a_batch_build_would() {
    let app = spawn_app(Seed::Trained).await;
    let snapshot_as_of = snapshot_as_of(&app).await;
    let before = predict(&app, "42").await;
    // Features as of now, not as of the snapshot.
    assert!(as_of(&before) >= snapshot_as_of);
    assert_eq!(
        before["churn_probability"].as_f64(),
        batch_probability(&app, 42, as_of(&before)).await
    );

    // A burst of activity for user 42, now.
    let now = chrono::Utc::now().timestamp();
    let burst: Vec<Value> = (0..20)
        .map(|i| {
            json!({"user_id": 42, "event_time": now - 20 + i, "event_type": "purchase",
                   "session_id": format!("live-{i}"), "amount": 25.0})
        })
        .collect();
    post_events(&app, Value::Array(burst)).await;
    let after = predict(&app, "42").await;
    assert_ne!(
        after["churn_probability"], before["churn_probability"],
        "the events moved the answer"
    );
    assert_eq!(
        after["churn_probability"].as_f64(),
        batch_probability(&app, 42, as_of(&after)).await,
        "the live answer is the batch answer as of its time"
    );
    // The explanation shows the new events in the features.
    let explained: Value = app
        .client
        .post(app.url("/predict?user_id=42&explain=true&top_k=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value = |name: &str| {
        explained["explanation"]["contributions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["feature"] == name)
            .map(|c| c["value"].as_f64().unwrap())
    };
    assert!(value("purchase_count_7d").unwrap() >= 20.0, "{explained}");
    assert!(value("last_event_days_ago").unwrap() < 0.01);

    // A user the snapshot never saw appears with their first event.
    assert_eq!(app.predict("777777").await.status(), 404);
    post_events(
        &app,
        json!([{"user_id": 777777, "event_time": now - 5, "event_type": "login"}]),
    )
    .await;
    let new_user = predict(&app, "777777").await;
    assert_eq!(
        new_user["churn_probability"].as_f64(),
        batch_probability(&app, 777_777, as_of(&new_user)).await
    );

    // A late event (older than the snapshot) counts too.
    let late_before = predict(&app, "43").await;
    post_events(
        &app,
        json!([{"user_id": 43, "event_time": snapshot_as_of - 3 * 86_400, "event_type": "purchase", "amount": 500.0}]),
    )
    .await;
    let late_after = predict(&app, "43").await;
    assert_ne!(
        late_after["churn_probability"],
        late_before["churn_probability"]
    );
    assert_eq!(
        late_after["churn_probability"].as_f64(),
        batch_probability(&app, 43, as_of(&late_after)).await
    );

    // Batch answers are live too, and equal single ones at the same time.
    let batch: Value = app
        .client
        .post(app.url("/predict/batch"))
        .json(&json!({"user_ids": [42, 777777]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in batch["predictions"].as_array().unwrap() {
        let user = p["user_id"].as_u64().unwrap();
        assert_eq!(
            p["churn_probability"].as_f64(),
            batch_probability(&app, user, as_of(p)).await
        );
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("churn_live_lookups_total{source=\"read\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("churn_live_users "));
    app.stop().await;
}

#[tokio::test]
async fn the_consistency_gauge_moves_on_a_forced_mismatch() {
    let app = spawn_app(Seed::Trained).await;
    let report: Value = check_now(&app).await;
    assert!(report["checked_users"].as_u64().unwrap() > 500, "{report}");
    assert_eq!(report["worst"], 0.0, "{report}");
    assert_eq!(report["alert"], false);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("churn_live_consistency_alert 0"),
        "{metrics}"
    );

    // Events dated before the snapshot, for every user: the store no
    // longer agrees with the snapshot, and the check says so.
    let snapshot_as_of = snapshot_as_of(&app).await;
    let late: Vec<Value> = (1..=1_000)
        .map(|u| json!({"user_id": u, "event_time": snapshot_as_of - 3_600, "event_type": "support_ticket"}))
        .collect();
    post_events(&app, Value::Array(late)).await;
    let report: Value = check_now(&app).await;
    assert_eq!(report["alert"], true, "{report}");
    let total = report["mismatch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["feature"] == "total_events")
        .unwrap();
    assert_eq!(total["ratio"], 1.0, "{report}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("churn_live_consistency_alert 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("churn_live_mismatch_ratio{feature=\"total_events\"} 1"),
        "{metrics}"
    );
    // The last report is kept for the dashboard.
    let last: Value = app
        .admin_get("/admin/features/consistency")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last, report);
    // A rebuild takes the late events in: consistent again.
    let job: Value = app
        .admin_post("/admin/features/rebuild")
        .await
        .json()
        .await
        .unwrap();
    app.wait_job(job["id"].as_u64().unwrap()).await;
    let report: Value = check_now(&app).await;
    assert_eq!(report["worst"], 0.0, "{report}");
    app.stop().await;
}

#[tokio::test]
async fn past_a_bound_the_snapshot_answers_and_live_off_serves_the_snapshot() {
    // Every user has more events than the bound: the snapshot answers.
    let app = spawn_app_with(Seed::Trained, |s| s.features.live_max_user_events = 1).await;
    let snapshot_as_of = snapshot_as_of(&app).await;
    let body = predict(&app, "42").await;
    assert_eq!(as_of(&body), snapshot_as_of);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("churn_live_fallbacks_total{reason=\"too_many_events\"}"),
        "{metrics}"
    );
    app.stop().await;

    let app = spawn_app_with(Seed::Trained, |s| s.features.live = false).await;
    // No live features: no consistency check to run or show.
    let r = app.admin_post("/admin/features/consistency").await;
    let body = crate::helpers::error_body(r, 503, "no_consistency_check").await;
    assert!(
        body["error"].as_str().unwrap().contains("features.live"),
        "{body}"
    );
    let r = app.admin_get("/admin/features/consistency").await;
    crate::helpers::error_body(r, 503, "no_consistency_check").await;
    let before = predict(&app, "42").await;
    let now = chrono::Utc::now().timestamp();
    post_events(
        &app,
        json!([{"user_id": 42, "event_time": now - 5, "event_type": "purchase", "amount": 99.0}]),
    )
    .await;
    let after = predict(&app, "42").await;
    assert_eq!(after["churn_probability"], before["churn_probability"]);
    assert_eq!(after["features_as_of"], before["features_as_of"]);
    app.stop().await;
}
