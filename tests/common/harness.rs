//! The shared test harness of the integration-test crates (api, dashboard,
//! clickhouse, kafka): `spawn_app()` gives each test its own server on
//! 127.0.0.1:0 with its own data directory, optionally pre-loaded with
//! generated events, features and a trained production model; `spawn()`
//! serves services a test built itself; typed request helpers.

#![allow(dead_code)] // each test crate uses a subset

use std::time::Duration;

use churn::application::generate::{GeneratorOptions, ingest_generated};
use churn::application::ingest::IngestReport;
use churn::application::ports::SnapshotSummary;
use churn::config::Settings;
use churn::startup::{Application, Services};
use secrecy::SecretString;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-admin-token";

/// How much state the app starts with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    Nothing,
    FeaturesOnly,
    Trained,
    /// Trained on users with UUID-shaped string ids.
    TrainedWithNames,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub services: Services,
    pub _dir: Option<tempfile::TempDir>,
}

pub fn settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings {
        data_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    s.server.port = 0;
    s.server.admin_token = SecretString::from(TOKEN.to_string());
    s.server.registry_poll_ms = 0;
    s.schedule.enabled = false;
    s
}

pub async fn spawn_app(seed: Seed) -> TestApp {
    spawn_app_with(seed, |_| {}).await
}

pub async fn spawn_app_with(seed: Seed, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    customize(&mut s);
    let services = Services::build(s).await.unwrap();
    if seed != Seed::Nothing {
        load(&services, 1_000, 5, seed == Seed::TrainedWithNames).await;
        if matches!(seed, Seed::Trained | Seed::TrainedWithNames) {
            let report = services.train.run().await.unwrap();
            assert!(report.promoted, "{}", report.decision);
        }
    }
    spawn(services, Some(dir)).await
}

/// Generated events (ending just before today's midnight, so the data and
/// what trains on it are the same on every run of a day) ingested through
/// the pipeline, then a feature snapshot as of now: what was stored and
/// built.
pub async fn load(
    services: &Services,
    users: u64,
    seed: u64,
    string_ids: bool,
) -> (SnapshotSummary, IngestReport) {
    let (_, stored) = ingest_generated(
        &services.ingest,
        GeneratorOptions {
            users,
            days: 120,
            end: churn::domain::time::floor_day(chrono::Utc::now().timestamp()) - 60,
            seed,
            churn_share: 0.35,
            string_ids,
        },
    )
    .await
    .unwrap();
    let built = services
        .build_features
        .run(churn::application::build_features::AsOf::Now)
        .await
        .unwrap();
    (built.summary, stored)
}

/// Trains once and makes the result production even if the recency gate
/// holds it back (tests that need a served model are not about the gate).
pub async fn train_and_promote(services: &Services) -> u64 {
    let report = services.train.run().await.unwrap();
    if !report.promoted {
        services
            .models
            .promote(report.version, "test")
            .await
            .unwrap();
    }
    report.version
}

/// Serves `services` on 127.0.0.1:0 until [`TestApp::stop`].
pub async fn spawn(services: Services, dir: Option<tempfile::TempDir>) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build_with_listener(services.clone(), listener)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown,
        server,
        services,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn predict(&self, user: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/predict?user_id={user}")))
            .send()
            .await
            .unwrap()
    }

    /// The `/metrics` page as text.
    pub async fn metrics(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// Polls a job until it leaves `running`.
    pub async fn wait_job(&self, id: u64) -> Value {
        for _ in 0..600 {
            let job: Value = self
                .admin_get(&format!("/admin/jobs/{id}"))
                .await
                .json()
                .await
                .unwrap();
            if job["status"] != "running" {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {id} did not finish");
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.server)
            .await
            .expect("server stops within the grace period")
            .unwrap()
            .unwrap();
    }
}

/// Asserts an error body has the documented shape and returns it.
pub async fn error_body(response: reqwest::Response, status: u16, error_type: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_type"], error_type, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body.get("detail").is_some(), "{body}");
    body
}
