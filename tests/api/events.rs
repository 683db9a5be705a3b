//! `POST /events` and `POST /admin/events/generate`: bodies, rejects,
//! identity of a body's events.

use serde_json::{Value, json};

use crate::helpers::{Seed, TOKEN, error_body, spawn_app, spawn_app_with};

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
    // No body at all is refused, not read as "every default" (a bare POST
    // stored ~415k demo events); `{}` asks for the defaults explicitly.
    let r = app
        .client
        .post(app.url("/admin/events/generate"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let e = error_body(r, 400, "bad_request").await;
    assert!(e["error"].as_str().unwrap().contains("{}"), "{e}");
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
