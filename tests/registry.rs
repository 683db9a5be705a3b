//! The model registry suite, run against the local filesystem and a real
//! S3 server (s3s-fs from scripts/s3.sh on 127.0.0.1:19100, SigV4 checked;
//! `CHURN_TEST_S3_ENDPOINT` overrides). A missing server fails loudly.
//!
//! - versions: numbered, immutable, checksummed, listed;
//! - concurrent promotions from several replicas: exactly one wins, the
//!   others get a conflict (never two silent winners);
//! - S3 failure modes give clear errors (wrong secret, missing bucket,
//!   unreachable endpoint);
//! - a server whose S3 registry goes away keeps serving its loaded model
//!   while `/readyz` says why, and starts (not ready) when S3 is down.

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/proxy.rs"]
mod proxy;

use std::sync::Arc;
use std::time::Duration;

use churn::application::ports::{AliasRecord, Coordination, ModelRegistry, RegistryError};
use churn::domain::model::{ModelKind, ModelMetadata, ModelMetrics};
use churn::infrastructure::registry::{ObjectStoreRegistry, S3Options};
use proxy::CuttableProxy;

const ACCESS: &str = "churn";
const SECRET: &str = "churn-secret";
const BUCKET: &str = "churn-test";

fn endpoint() -> String {
    std::env::var("CHURN_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:19100".into())
}

/// S3 prefixes read better with dashes.
fn unique(tag: &str) -> String {
    fixtures::unique(tag).replace('_', "-")
}

fn s3_options(endpoint: &str, prefix: &str) -> S3Options {
    S3Options {
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        region: "us-east-1".into(),
        access_key_id: Some(ACCESS.into()),
        secret_access_key: Some(SECRET.into()),
        allow_http: true,
        virtual_hosted_style: false,
        timeout: Duration::from_secs(5),
    }
}

/// Makes registry instances on one shared location: each instance stands
/// for a replica (its own process-local lock), so races are real.
///
/// This is the registry contract suite: every adapter runs it — the local
/// filesystem, S3 (s3s-fs) and the in-memory fake the use-case unit tests
/// use, so the fake cannot drift from the real registries. Each adapter is
/// also the replicas' coordination store (lease, tick claims).
trait Backend: ModelRegistry + Coordination {}
impl<T: ModelRegistry + Coordination> Backend for T {}

type Factory = Box<dyn Fn() -> Arc<dyn Backend> + Send + Sync>;

fn backends(dir: &std::path::Path) -> Vec<(&'static str, Factory)> {
    let local_dir = dir.to_path_buf();
    let prefix = unique("suite");
    let memory = churn::testing::MemoryRegistry::default();
    vec![
        (
            "local",
            Box::new(move || {
                Arc::new(ObjectStoreRegistry::local(&local_dir, "churn_model").unwrap())
            }),
        ),
        (
            "s3",
            Box::new(move || {
                Arc::new(
                    ObjectStoreRegistry::s3(&s3_options(&endpoint(), &prefix), "churn_model")
                        .unwrap(),
                )
            }),
        ),
        ("memory", Box::new(move || Arc::new(memory.clone()))),
    ]
}

/// The coordination contract: a lease moves only from what the writer
/// read, a tick is claimed once, old claims can be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_swap_and_ticks_are_claimed_once_on_every_backend() {
    use churn::domain::lease::{Lease, TickClaim};
    let dir = tempfile::tempdir().unwrap();
    for (name, make) in backends(dir.path()) {
        let (a, b) = (make(), make());
        assert_eq!(a.lease("scheduler").await.unwrap(), None, "{name}");
        let lease = |holder: &str, token: u64| Lease {
            holder: holder.into(),
            token,
            expires_at_ms: 1_000 * token as i64,
            acquired_at_ms: 0,
        };
        a.swap_lease("scheduler", &lease("a", 1), None)
            .await
            .unwrap();
        // b read "nothing" too: its take loses.
        assert!(
            matches!(
                b.swap_lease("scheduler", &lease("b", 1), None).await,
                Err(RegistryError::Conflict { .. })
            ),
            "{name}"
        );
        assert_eq!(
            b.lease("scheduler").await.unwrap(),
            Some(lease("a", 1)),
            "{name}"
        );
        b.swap_lease("scheduler", &lease("b", 2), Some(&lease("a", 1)))
            .await
            .unwrap();
        // a renews from a stale read: refused.
        assert!(
            matches!(
                a.swap_lease("scheduler", &lease("a", 1), Some(&lease("a", 1)))
                    .await,
                Err(RegistryError::Conflict { .. })
            ),
            "{name}"
        );
        let claim = |tick: i64, holder: &str| TickClaim {
            job: "retrain".into(),
            tick,
            holder: holder.into(),
            token: 2,
        };
        assert!(b.claim_tick(&claim(100, "b")).await.unwrap(), "{name}");
        assert!(
            !a.claim_tick(&claim(100, "a")).await.unwrap(),
            "{name}: once"
        );
        assert!(b.claim_tick(&claim(101, "b")).await.unwrap(), "{name}");
        let ticks = a.ticks("retrain").await.unwrap();
        assert_eq!(ticks, vec![claim(100, "b"), claim(101, "b")], "{name}");
        assert!(
            a.ticks("build_features").await.unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(a.forget_ticks("retrain", 101).await.unwrap(), 1, "{name}");
        assert_eq!(
            a.ticks("retrain").await.unwrap(),
            vec![claim(101, "b")],
            "{name}"
        );
    }
}

fn metadata() -> ModelMetadata {
    ModelMetadata {
        name: String::new(),
        version: 0,
        kind: ModelKind::Gbdt,
        feature_names: vec!["a".into(), "b".into()],
        feature_fingerprint: "f".into(),
        train_cutoffs: vec!["2026-01-01T00:00:00Z".into()],
        validation_cutoff: "2026-02-01T00:00:00Z".into(),
        horizon_days: 30,
        lookback_days: 30,
        train_rows: 10,
        validation_rows: 5,
        train_churn_rate: 0.2,
        validation_churn_rate: 0.2,
        metrics: ModelMetrics {
            auc: 0.8,
            pr_auc: 0.5,
            logloss: 0.3,
            brier: 0.1,
            recency_auc: 0.7,
        },
        baseline_metrics: None,
        hyperparameters: serde_json::json!({}),
        trained_at: "2026-02-01T00:00:00Z".into(),
        training_secs: 1.0,
        crate_version: "test".into(),
        checksum_sha256: String::new(),
        feature_importance: Vec::new(),
        calibration: None,
        report: Default::default(),
        drift_reference: None,
        scheduled: None,
    }
}

#[tokio::test]
async fn versions_are_numbered_immutable_and_checksummed_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (name, make) in backends(dir.path()) {
        let registry = make();
        registry.ping().await.unwrap_or_else(|e| {
            panic!("{name}: registry unreachable (scripts/s3.sh running?): {e}")
        });
        let one = registry
            .register(metadata(), b"model one".to_vec())
            .await
            .unwrap();
        let two = registry
            .register(metadata(), vec![7u8; 3 << 20])
            .await
            .unwrap();
        assert_eq!((one.version, two.version), (1, 2), "{name}");
        assert_eq!(one.name, "churn_model");
        let listed: Vec<u64> = registry
            .list()
            .await
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(listed, vec![1, 2], "{name}");
        let (meta, bytes) = registry.load(2).await.unwrap();
        assert_eq!(bytes.len(), 3 << 20, "{name}");
        assert_eq!(meta.checksum_sha256.len(), 64);
        // Another replica sees the same versions.
        assert_eq!(make().list().await.unwrap().len(), 2, "{name}");
        assert!(matches!(
            registry.load(9).await,
            Err(RegistryError::UnknownVersion(9))
        ));
    }
}

/// Replicas that read the same production record and then promote: the
/// second writer holds a stale view and must get a conflict. Deterministic,
/// so it runs on both backends.
#[tokio::test]
async fn a_stale_promotion_is_a_conflict_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (name, make) in backends(dir.path()) {
        let (a, b) = (make(), make());
        for _ in 0..3 {
            a.register(metadata(), b"m".to_vec()).await.unwrap();
        }
        let v1 = AliasRecord {
            version: 1,
            history: vec![],
            updated_at: "t0".into(),
            reason: "initial".into(),
            fence: None,
        };
        a.set_alias("production", v1.clone(), None).await.unwrap();
        let seen_by_a = a.alias("production").await.unwrap().unwrap();
        let seen_by_b = b.alias("production").await.unwrap().unwrap();
        let to = |v: u64, who: &str| AliasRecord {
            version: v,
            history: vec![1],
            updated_at: format!("by {who}"),
            reason: who.into(),
            fence: None,
        };
        a.set_alias("production", to(2, "a"), Some(&seen_by_a))
            .await
            .unwrap();
        let lost = b
            .set_alias("production", to(3, "b"), Some(&seen_by_b))
            .await;
        assert!(
            matches!(lost, Err(RegistryError::Conflict { .. })),
            "{name}: {lost:?}"
        );
        assert_eq!(
            a.alias("production").await.unwrap().unwrap(),
            to(2, "a"),
            "{name}"
        );
    }
}

/// The S3 primitive under the alias move: a write conditioned on a
/// superseded ETag is refused by the server (`Precondition`), which the
/// registry reports as a conflict.
#[tokio::test]
async fn s3_refuses_a_write_with_a_superseded_etag() {
    use object_store::{ObjectStore, ObjectStoreExt, PutMode, UpdateVersion};
    let o = s3_options(&endpoint(), &unique("etag"));
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&o.bucket)
        .with_region(&o.region)
        .with_endpoint(endpoint())
        .with_allow_http(true)
        .with_access_key_id(ACCESS)
        .with_secret_access_key(SECRET)
        .build()
        .unwrap();
    let path = object_store::path::Path::from(format!("{}/alias.json", o.prefix));
    let first = store.put(&path, "v1".into()).await.unwrap();
    let stale = UpdateVersion {
        e_tag: first.e_tag.clone(),
        version: first.version.clone(),
    };
    store
        .put_opts(&path, "v2".into(), PutMode::Update(stale.clone()).into())
        .await
        .unwrap();
    let second = store
        .put_opts(&path, "v3".into(), PutMode::Update(stale).into())
        .await;
    assert!(
        matches!(second, Err(object_store::Error::Precondition { .. })),
        "{second:?}"
    );
    let body = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"v2");
}

/// Truly parallel promotions by 8 replicas: exactly one wins, on every
/// backend: the local one (OS file lock), the fake (a mutex) and S3. The
/// S3 server is s3s-fs built with scripts/s3s-fs-atomic-cas.patch: stock
/// s3s-fs checks a condition, then writes, so racing compare-and-swaps all
/// "won" (7 of 8 racing writers; 50 of 50 pairs) and this test could not
/// catch a regression of ours. AWS S3 and MinIO make the check atomic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_promotions_have_exactly_one_winner_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (name, make) in backends(dir.path()) {
        let make = Arc::new(make);
        let seed = make();
        for _ in 0..3 {
            seed.register(metadata(), b"m".to_vec()).await.unwrap();
        }
        let first = AliasRecord {
            version: 1,
            history: vec![],
            updated_at: "t0".into(),
            reason: "initial".into(),
            fence: None,
        };
        seed.set_alias("production", first.clone(), None)
            .await
            .unwrap();
        // A second create of a fresh alias loses too.
        assert!(matches!(
            seed.set_alias("production", first.clone(), None).await,
            Err(RegistryError::Conflict { .. })
        ));
        let mut current = first;
        for round in 0..20 {
            let replicas = 8;
            let barrier = Arc::new(tokio::sync::Barrier::new(replicas));
            let mut tasks = Vec::new();
            for r in 0..replicas {
                let (make, barrier, expected) = (make.clone(), barrier.clone(), current.clone());
                tasks.push(tokio::spawn(async move {
                    let registry = make();
                    let record = AliasRecord {
                        version: 2 + (r as u64 % 2),
                        history: vec![expected.version],
                        updated_at: format!("round {round} replica {r}"),
                        reason: format!("replica {r}"),
                        fence: None,
                    };
                    barrier.wait().await;
                    let outcome = registry
                        .set_alias("production", record.clone(), Some(&expected))
                        .await;
                    (record, outcome)
                }));
            }
            let mut winners = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    (record, Ok(())) => winners.push(record),
                    (_, Err(RegistryError::Conflict { .. })) => {}
                    (_, Err(e)) => panic!("{name}: unexpected error {e}"),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "{name} round {round}: exactly one promotion wins"
            );
            let stored = seed.alias("production").await.unwrap().unwrap();
            assert_eq!(
                stored, winners[0],
                "{name}: the winner's record is the one stored"
            );
            current = stored;
        }
    }
}

#[tokio::test]
async fn s3_failures_are_clear_errors() {
    let prefix = unique("errors");
    let mut wrong_secret = s3_options(&endpoint(), &prefix);
    wrong_secret.secret_access_key = Some("not-the-secret".into());
    let e = ObjectStoreRegistry::s3(&wrong_secret, "m")
        .unwrap()
        .ping()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s3://churn-test") && (e.contains("403") || e.contains("Signature")),
        "{e}"
    );

    let mut missing_bucket = s3_options(&endpoint(), &prefix);
    missing_bucket.bucket = "no-such-bucket".into();
    let e = ObjectStoreRegistry::s3(&missing_bucket, "m")
        .unwrap()
        .ping()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-bucket"), "{e}");

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut unreachable = s3_options(&format!("http://127.0.0.1:{dead}"), &prefix);
    unreachable.timeout = Duration::from_secs(1);
    let e = ObjectStoreRegistry::s3(&unreachable, "m")
        .unwrap()
        .ping()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("127.0.0.1:{dead}")), "{e}");
}

fn s3_settings(dir: &std::path::Path, endpoint: &str, prefix: &str) -> churn::config::Settings {
    let mut s = churn::config::Settings {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    s.registry.url = format!("s3://{BUCKET}/{prefix}");
    s.registry.s3_endpoint = endpoint.to_string();
    s.registry.s3_access_key_id = ACCESS.into();
    s.registry.s3_secret_access_key = secrecy::SecretString::from(SECRET.to_string());
    s.registry.s3_allow_http = true;
    s.registry.s3_timeout_secs = 2;
    s.server.port = 0;
    s.server.registry_poll_ms = 200;
    s.schedule.enabled = false;
    s
}

async fn ready(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_survives_an_s3_outage_and_starts_without_s3() {
    use churn::startup::{Application, Services};
    let upstream = endpoint().trim_start_matches("http://").to_string();
    let proxy = CuttableProxy::start(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("serve");
    let services = Services::build_with(s3_settings(dir.path(), &proxy.url, &prefix), true)
        .await
        .unwrap();
    fixtures::seed_store(&services, 1_000, 4).await;
    let version = fixtures::train_and_promote(&services).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build_with_listener(services, listener)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let client = reqwest::Client::new();
    let predict = || client.post(format!("{base}/predict?user_id=3")).send();
    assert_eq!(predict().await.unwrap().status(), 200);
    assert_eq!(ready(&base).await["ready"], true);

    proxy.set_up(false);
    let r = ready(&base).await;
    assert_eq!(r["registry_reachable"], false, "{r}");
    assert!(r["problems"].to_string().contains("registry"), "{r}");
    // Registry polls fail meanwhile; the loaded model keeps serving.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = predict().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["model_version"], version.to_string());
    proxy.set_up(true);
    assert_eq!(ready(&base).await["ready"], true);
    stop.cancel();
    server.await.unwrap().unwrap();

    // Starting while S3 is down: the server comes up, not ready, and says why.
    proxy.set_up(false);
    let dir2 = tempfile::tempdir().unwrap();
    let services = Services::build(s3_settings(dir2.path(), &proxy.url, &prefix))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build_with_listener(services, listener)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let r = ready(&base).await;
    assert_eq!(r["ready"], false, "{r}");
    assert_eq!(r["registry_reachable"], false, "{r}");
    stop.cancel();
    server.await.unwrap().unwrap();
}
