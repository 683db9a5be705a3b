//! The admin API: the token, jobs, promotion and rollback, hot swap under
//! load, the at-risk list.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Seed, TOKEN, error_body, spawn_app, spawn_app_with};

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
    // The header is read strictly: a space inside is not the token, and two
    // Authorization headers are refused whichever comes first. (A trailing
    // space is not part of a field value (RFC 9110 §5.5): the HTTP parser
    // strips it before any handler runs, so `Bearer TOKEN ` *is* the
    // header `Bearer TOKEN`; the unit tests of `http::auth` refuse it where
    // it could still arrive.)
    let raw = |values: &[String]| {
        let mut r = app.client.get(app.url("/admin/models"));
        for v in values {
            r = r.header("authorization", v);
        }
        r.send()
    };
    for values in [
        vec![format!("Bearer  {TOKEN}")],
        vec![format!("Bearer {TOKEN}\tx")],
        vec![format!("Bearer {TOKEN}"), "Bearer wrong".to_string()],
        vec!["Bearer wrong".to_string(), format!("Bearer {TOKEN}")],
    ] {
        let r = raw(&values).await.unwrap();
        error_body(r, 401, "unauthorized").await;
    }
    let r = raw(&[format!("bearer {TOKEN}")]).await.unwrap();
    assert_eq!(r.status(), 200, "the scheme is case-insensitive");
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
    let response = get("?limit=10&top_k=2").await.unwrap();
    let header =
        |name: &str| -> usize { response.headers()[name].to_str().unwrap().parse().unwrap() };
    let (ranked, left_out) = (header("churn-ranked-users"), header("churn-left-out-users"));
    let reason = response.headers()["churn-left-out-reason"]
        .to_str()
        .unwrap()
        .to_string();
    let list: Value = response.json().await.unwrap();
    // Only users eligible at the snapshot's time are ranked: the generated
    // users who stopped long ago are left out, and the list says so.
    let snapshot = app
        .services
        .features
        .latest_snapshot(None)
        .await
        .unwrap()
        .unwrap();
    let eligible = churn::application::score::eligible_users(
        &*app.services.features,
        &churn::startup::label_policy(&app.services.settings),
        snapshot.as_of(),
    )
    .await
    .unwrap();
    assert_eq!(ranked, eligible.len());
    assert_eq!(ranked + left_out, snapshot.len());
    assert!(left_out > 0, "the generated data has users gone long ago");
    assert!(reason.contains("not eligible"), "{reason}");
    for p in list.as_array().unwrap() {
        let user = p["user_id"].as_u64().unwrap();
        assert!(
            eligible.binary_search(&user).is_ok(),
            "user {user} is not eligible"
        );
    }
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
    // No eligible user scores above the top of the list.
    let ids: Vec<u64> = eligible.clone();
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

/// The optional data tokens: a write key for `POST /events` and a read
/// token for `/predict*` (the fast path too), each refused without it.
#[tokio::test]
async fn ingest_and_read_tokens_guard_the_data_routes_when_set() {
    let app = spawn_app_with(Seed::Trained, |s| {
        s.server.ingest_token = "write-key".to_string().into();
        s.server.predict_token = "read-key".to_string().into();
    })
    .await;
    let event = r#"{"user_id":5,"event_time":"2026-01-02 10:00:00","event_type":"login"}"#;
    let post_event = |token: Option<&str>| {
        let r = app.client.post(app.url("/events")).body(event);
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
        .send()
    };
    let before = app.services.events.stats().await.unwrap().events;
    error_body(post_event(None).await.unwrap(), 401, "unauthorized").await;
    error_body(
        post_event(Some("read-key")).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    error_body(post_event(Some(TOKEN)).await.unwrap(), 401, "unauthorized").await;
    assert_eq!(app.services.events.stats().await.unwrap().events, before);
    let r = post_event(Some("write-key")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.services.events.stats().await.unwrap().events,
        before + 1
    );

    let predict = |token: Option<&str>| {
        let r = app.client.post(app.url("/predict?user_id=1"));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
        .send()
    };
    // The plain form is answered by the fast path, which checks too.
    error_body(predict(None).await.unwrap(), 401, "unauthorized").await;
    error_body(
        predict(Some("write-key")).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(predict(Some("read-key")).await.unwrap().status(), 200);
    let batch = |token: Option<&str>| {
        let r = app
            .client
            .post(app.url("/predict/batch"))
            .json(&json!({"user_ids": [1, 2]}));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
        .send()
    };
    error_body(batch(None).await.unwrap(), 401, "unauthorized").await;
    assert_eq!(batch(Some("read-key")).await.unwrap().status(), 200);
    // Health, readiness and metrics stay open for probes and scrapers.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_ne!(r.status(), 401, "{path}");
    }
    app.stop().await;
}

/// Every answer, errors echoing input included, carries `nosniff`.
#[tokio::test]
async fn answers_say_nosniff() {
    let app = spawn_app(Seed::Trained).await;
    for r in [
        app.predict("1").await,
        app.predict("no-such-user-<script>").await,
        app.client.get(app.url("/nowhere")).send().await.unwrap(),
        app.client
            .post(app.url("/events"))
            .body("{\"user_id\":")
            .send()
            .await
            .unwrap(),
        app.client.get(app.url("/readyz")).send().await.unwrap(),
    ] {
        assert_eq!(
            r.headers()
                .get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{}",
            r.url()
        );
    }
    app.stop().await;
}

/// What the handlers refuse, the document says: `top_k` and `limit` of 0
/// were refused while the schema allowed them.
#[tokio::test]
async fn the_document_states_the_lower_bounds_the_handlers_enforce() {
    let app = spawn_app(Seed::Nothing).await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let minimum = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["schema"]["minimum"].clone())
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
    };
    assert_eq!(minimum("/predict", "post", "top_k"), json!(1));
    assert_eq!(minimum("/admin/at-risk", "get", "top_k"), json!(1));
    assert_eq!(minimum("/admin/at-risk", "get", "limit"), json!(1));
    assert_eq!(minimum("/admin/jobs", "get", "limit"), json!(1));
    assert_eq!(
        doc["components"]["schemas"]["BatchRequest"]["properties"]["top_k"]["minimum"],
        json!(1),
        "{}",
        doc["components"]["schemas"]["BatchRequest"]
    );
    app.stop().await;
}

/// The files of version `v` in the local registry under `dir`.
fn version_file(dir: &std::path::Path, v: u64, file: &str) -> std::path::PathBuf {
    dir.join("registry")
        .join("churn_model")
        .join("versions")
        .join(format!("{v:08}"))
        .join(file)
}

/// Registry recovery: a corrupt production model falls back to the
/// production version before it (it left a restarted server with no model);
/// an unreadable alias is replaced by a promotion through the API (it could
/// not be); a tampered model whose checksum was recomputed is refused by
/// the canary (it served 0.0/1.0 for everyone).
#[tokio::test]
async fn the_registry_recovers_from_corrupt_models_and_aliases() {
    use sha2::Digest;

    let mut app = spawn_app(Seed::Trained).await;
    let report = app.services.train.run().await.unwrap();
    let second = report.version;
    let r = app
        .admin_post(&format!("/admin/models/{second}/promote"))
        .await;
    assert_eq!(r.status(), 200);
    let dir = app._dir.take().unwrap();
    let settings = app.services.settings.clone();
    app.stop().await;
    assert!(version_file(dir.path(), second, "model.bin").exists());

    // 1. The production model file is corrupt.
    let model = version_file(dir.path(), second, "model.bin");
    let mut bytes = std::fs::read(&model).unwrap();
    bytes.extend_from_slice(b"garbage");
    std::fs::write(&model, &bytes).unwrap();
    let app = crate::helpers::spawn(
        churn::startup::Services::build((*settings).clone())
            .await
            .unwrap(),
        None,
    )
    .await;
    let r = app.predict("1").await;
    assert_eq!(r.status(), 200, "an intact earlier version serves");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model_version"], "1", "{body}");
    // Readiness still names the refused version: an operator must act.
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["model_version"], 1, "{ready}");
    assert!(
        ready["problems"][0].as_str().is_some_and(
            |w| w.contains(&format!("version {second}")) && w.contains("serving version 1")
        ),
        "{ready}"
    );
    app.stop().await;

    // 2. The alias file is unreadable: no model, readiness says how to
    // repair, a promotion through the API repairs it.
    let alias = dir
        .path()
        .join("registry/churn_model/aliases/production.json");
    std::fs::write(&alias, b"{\"version\": 2, tor").unwrap();
    let app = crate::helpers::spawn(
        churn::startup::Services::build((*settings).clone())
            .await
            .unwrap(),
        None,
    )
    .await;
    assert_eq!(app.predict("1").await.status(), 503);
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready
            .to_string()
            .contains("production alias cannot be read"),
        "{ready}"
    );
    let r = app.admin_post("/admin/models/1/promote").await;
    assert_eq!(r.status(), 200);
    let record: Value = r.json().await.unwrap();
    assert!(
        record["reason"].as_str().unwrap().contains("unreadable"),
        "{record}"
    );
    let body: Value = app.predict("1").await.json().await.unwrap();
    assert_eq!(body["model_version"], "1", "{body}");

    // 3. A tampered model with a recomputed checksum: one constant
    // probability for everyone, refused by the canary.
    let meta_path = version_file(dir.path(), second, "metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let n = meta["feature_names"].as_array().unwrap().len();
    let tampered = serde_json::to_vec(&json!({
        "coefficients": vec![0.0; n],
        "intercept": 40.0,
        "means": vec![0.0; n],
        "scales": vec![1.0; n],
    }))
    .unwrap();
    std::fs::write(version_file(dir.path(), second, "model.bin"), &tampered).unwrap();
    meta["kind"] = json!("logistic");
    meta["checksum_sha256"] = json!(hex::encode(sha2::Sha256::digest(&tampered)));
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let r = app
        .admin_post(&format!("/admin/models/{second}/promote"))
        .await;
    let e = error_body(r, 422, "swap_failed").await;
    assert!(
        e["error"].as_str().unwrap().contains("same probability"),
        "{e}"
    );
    let body: Value = app.predict("1").await.json().await.unwrap();
    assert_eq!(
        body["model_version"], "1",
        "the intact version keeps serving: {body}"
    );
    app.stop().await;
}

/// Erasure through the API: the user's events, feature rows and name go,
/// the model's drift sample (in memory and in every stored version) loses
/// the id, predictions answer 404, other users are untouched.
#[tokio::test]
async fn delete_user_erases_them_everywhere() {
    let app = spawn_app(Seed::Trained).await;
    let models: Value = app.admin_get("/admin/models").await.json().await.unwrap();
    let sample = models[0]["drift_reference"]["user_sample"]["users"]
        .as_array()
        .unwrap()
        .clone();
    let user = sample
        .iter()
        .filter_map(Value::as_u64)
        .find(|u| *u > 0)
        .expect("a sampled reference user");
    let other = if user == 1 { 2 } else { 1 };
    assert_eq!(app.predict(&user.to_string()).await.status(), 200);
    let before = app.services.events.stats().await.unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/admin/users/{user}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    let events = report["events"].as_u64().unwrap();
    assert!(events > 0, "{report}");
    assert!(report["feature_rows"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["model_versions"], 1, "{report}");
    assert_eq!(report["users"], json!([user]), "{report}");
    // Gone from the store, from serving, from the registry's metadata.
    let after = app.services.events.stats().await.unwrap();
    assert_eq!(after.events, before.events - events);
    let spec = churn::domain::features::FeatureSpec::standard();
    let left = app
        .services
        .features
        .user_events(&spec, user, 10_000)
        .await
        .unwrap();
    assert!(left.is_none_or(|e| e.is_empty()));
    error_body(app.predict(&user.to_string()).await, 404, "unknown_user").await;
    assert_eq!(app.predict(&other.to_string()).await.status(), 200);
    let models: Value = app.admin_get("/admin/models").await.json().await.unwrap();
    assert!(
        !models[0]["drift_reference"]["user_sample"]["users"]
            .as_array()
            .unwrap()
            .contains(&json!(user)),
        "the stored version's sample still holds the user"
    );
    // Every stored version's metadata, read from disk.
    let registry = app.services.settings.data_dir.join("registry");
    let files: Vec<_> = walk(&registry)
        .into_iter()
        .filter(|p| p.ends_with("metadata.json"))
        .collect();
    assert!(!files.is_empty());
    for file in files {
        let meta: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let users = &meta["drift_reference"]["user_sample"]["users"];
        assert!(
            !users.as_array().unwrap().contains(&json!(user)),
            "{} still holds the user",
            file.display()
        );
    }
    // Again: nothing left to remove, still a success.
    let r = app
        .client
        .delete(app.url(&format!("/admin/users/{user}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["events"], 0, "{again}");
    app.stop().await;
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `store.retention_days`: each feature rebuild first drops events older
/// than the window (by the wall clock), and says how many.
#[tokio::test]
async fn retention_drops_old_events_before_each_rebuild() {
    let app = spawn_app_with(Seed::FeaturesOnly, |s| s.store.retention_days = 30).await;
    let before = app.services.events.stats().await.unwrap();
    let cutoff = chrono::Utc::now().timestamp() - 30 * 86_400;
    assert!(before.first_event_time.unwrap() < cutoff);
    let job: Value = app
        .admin_post("/admin/features/rebuild")
        .await
        .json()
        .await
        .unwrap();
    let done = app.wait_job(job["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let dropped = done["result"]["retention_dropped_events"].as_u64().unwrap();
    let after = app.services.events.stats().await.unwrap();
    assert!(dropped > 0);
    assert_eq!(after.events, before.events - dropped);
    assert!(after.first_event_time.unwrap() >= cutoff - 60, "{after:?}");
    app.stop().await;
}

/// `churn backup` while the server serves and events keep arriving, then
/// `churn restore` into a fresh directory: the copy is the store as of one
/// instant (its count matches its manifest and lies between the counts
/// before and after), the registry comes along, and the restored state
/// predicts exactly what the original does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_ingesting_restores_to_the_same_predictions() {
    let app = spawn_app(Seed::Trained).await;
    let data = app.services.settings.data_dir.clone();
    let before = app.services.events.stats().await.unwrap().events;
    // Writers during the backup: posts to the running server.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, url, stop) = (app.client.clone(), app.url("/events"), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body: String = (0..50)
                    .map(|k| {
                        format!(
                            "{{\"user_id\":{},\"event_time\":\"2026-01-02 10:00:00\",\"event_type\":\"login\",\"event_id\":\"w{i}-{k}\"}}\n",
                            900_000 + k
                        )
                    })
                    .collect();
                let r = client.post(&url).body(body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                i += 1;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let target = backup_dir.path().join("backup");
    let out = churn_cli(&["backup", target.to_str().unwrap(), "--json"], &data).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let posts = writer.await.unwrap();
    let after = app.services.events.stats().await.unwrap().events;
    let copied = manifest["events"].as_u64().unwrap();
    assert!(posts > 2, "writes ran during the backup");
    assert!(
        before < copied && copied < after,
        "a copy of one instant mid-ingest: {before} < {copied} < {after}"
    );
    assert_eq!(manifest["production"], 1, "{manifest}");

    // Restore into a fresh data directory and serve it.
    let fresh = tempfile::tempdir().unwrap();
    let out = churn_cli(&["restore", target.to_str().unwrap()], fresh.path()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second restore over it is refused without --overwrite.
    let again = churn_cli(&["restore", target.to_str().unwrap()], fresh.path()).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    let mut settings = (*app.services.settings).clone();
    settings.data_dir = fresh.path().to_path_buf();
    let restored = crate::helpers::spawn(
        churn::startup::Services::build(settings).await.unwrap(),
        None,
    )
    .await;
    assert_eq!(
        restored.services.events.stats().await.unwrap().events,
        copied
    );
    let users = json!({"user_ids": (1..=40).collect::<Vec<u64>>()});
    let answer = |app: &crate::helpers::TestApp| {
        let r = app
            .client
            .post(app.url("/predict/batch"))
            .json(&users)
            .send();
        async move {
            let body: Value = r.await.unwrap().json().await.unwrap();
            body["predictions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["user_id"].clone(),
                        p["churn_probability"].clone(),
                        p["model_version"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let (original, copy) = (answer(&app).await, answer(&restored).await);
    assert!(original.len() > 20, "{original:?}");
    assert_eq!(original, copy, "the restored state predicts the same");
    restored.stop().await;
    app.stop().await;
}

/// Runs the `churn` binary on `data_dir` off the runtime.
async fn churn_cli(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_churn"))
            .args(&args)
            .env("CHURN_DATA_DIR", &data_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}
