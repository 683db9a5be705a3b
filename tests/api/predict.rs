//! `POST /predict` (both ways in) and `/predict/batch`: answers, errors,
//! explanations, string ids.

use serde_json::{Value, json};

use crate::helpers::{Seed, TOKEN, error_body, spawn_app, spawn_app_with};

#[tokio::test]
async fn predict_answers_in_the_seed_shape() {
    // The snapshot's answers (the score table): live features are
    // tests/api/live.rs's subject.
    let app = spawn_app_with(Seed::Trained, |s| s.features.live = false).await;
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
        .latest_snapshot(None)
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
