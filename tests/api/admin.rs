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
