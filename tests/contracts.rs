//! Contract suites of the event-store and feature-store ports, generic over
//! the adapter and run against every one: the embedded SQLite store, the
//! ClickHouse store (the 18.16 server from scripts/clickhouse.sh;
//! `CHURN_TEST_CLICKHOUSE_URL` overrides; absent = loud failure) and the
//! in-memory fake the use-case unit tests rely on. The registry's suite is
//! `tests/registry.rs` (local, S3, memory).
//!
//! Rules that are written once in the domain (snapshot retention, header,
//! row width, rounding, the label windows) are checked here through each
//! adapter, so an adapter that applies them differently fails by name.

#[path = "common/fixtures.rs"]
mod fixtures;

use std::sync::Arc;

use churn::application::ports::{EventStore, FeatureStore};
use churn::domain::event::{Event, TimePolicy};
use churn::domain::features::FeatureSpec;
use churn::domain::label::LabelPolicy;
use churn::domain::sampling::RowSample;
use churn::domain::snapshot::quantize;
use churn::domain::time::DAY_SECS;
use churn::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};
use churn::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};
use churn::testing::MemoryStore;

const T: i64 = 1_767_225_600; // 2026-01-01 00:00:00 UTC
const RETENTION: usize = 2;

/// One adapter under test, both ports.
struct Adapter {
    name: &'static str,
    events: Arc<dyn EventStore>,
    features: Arc<dyn FeatureStore>,
    /// Keeps the SQLite file alive; drops the ClickHouse database.
    _guard: Guard,
}

enum Guard {
    None,
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Database(Box<ClickHouseStore>),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Database(store) = self {
            let store = (**store).clone();
            // Best effort: a leftover test database only costs disk.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Runtime::new()
                    .map(|rt| rt.block_on(store.drop_database()))
                    .ok();
            })
            .join();
        }
    }
}

async fn adapters() -> Vec<Adapter> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(SqliteOptions {
        path: dir.path().join("churn.db"),
        synchronous_full: false,
        snapshot_retention: RETENTION,
    })
    .unwrap();
    let url = std::env::var("CHURN_TEST_CLICKHOUSE_URL")
        .expect("CHURN_TEST_CLICKHOUSE_URL unset: run through scripts/test.sh");
    let db = fixtures::unique("churn_contract");
    let clickhouse = ClickHouseStore::new(&ClickHouseOptions {
        url: url.clone(),
        database: db,
        user: "default".into(),
        password: String::new(),
        validation: std::env::var("CHURN_TEST_CLICKHOUSE_VALIDATION").is_ok_and(|v| v == "true"),
        snapshot_retention: RETENTION,
        dedup_check: true,
    })
    .unwrap();
    clickhouse
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("ClickHouse at {url} unusable ({e}): scripts/clickhouse.sh"));
    let memory = MemoryStore::new(RETENTION);
    vec![
        Adapter {
            name: "sqlite",
            events: Arc::new(sqlite.clone()),
            features: Arc::new(sqlite),
            _guard: Guard::Dir(dir),
        },
        Adapter {
            name: "clickhouse",
            events: Arc::new(clickhouse.clone()),
            features: Arc::new(clickhouse.clone()),
            _guard: Guard::Database(Box::new(clickhouse)),
        },
        Adapter {
            name: "memory",
            events: Arc::new(memory.clone()),
            features: Arc::new(memory),
            _guard: Guard::None,
        },
    ]
}

fn event(user: u64, time: i64, kind: &str, session: Option<&str>, amount: Option<f64>) -> Event {
    Event::new(
        user,
        time,
        kind,
        session,
        amount,
        TimePolicy::at(T + 400 * DAY_SECS, 0),
    )
    .unwrap()
}

/// Three users with known histories around T.
fn history() -> Vec<Event> {
    let d = DAY_SECS;
    vec![
        // User 1: active before T and after: retained.
        event(1, T - 10 * d, "login", Some("a"), None),
        event(1, T - 2 * d, "purchase", Some("a"), Some(9.99)),
        event(1, T + 5 * d, "login", Some("b"), None),
        // User 2: active before T, silent after: churned.
        event(2, T - 3 * d, "view", None, None),
        event(2, T, "view", None, None),
        // User 3: last seen long before the lookback: not eligible at T.
        event(3, T - 200 * d, "login", None, None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_idempotent_and_stats_agree() {
    for a in adapters().await {
        let first = a.events.append(history()).await.unwrap();
        assert_eq!((first.inserted, first.duplicates), (6, 0), "{}", a.name);
        let again = a.events.append(history()).await.unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 6), "{}", a.name);
        // Duplicates inside one batch count once too.
        let e = event(4, T, "login", None, None);
        let within = a.events.append(vec![e.clone(), e]).await.unwrap();
        assert_eq!((within.inserted, within.duplicates), (1, 1), "{}", a.name);
        // A batch mixing a stored event with new ones of the same users in
        // the same time span: only the stored one is a duplicate (the
        // ClickHouse check reads every stored id of those users and span).
        let d = DAY_SECS;
        let mixed = vec![
            event(1, T - 2 * d, "purchase", Some("a"), Some(9.99)),
            event(1, T - 5 * d, "view", Some("a"), None),
            event(2, T - d, "view", None, None),
        ];
        let mixed = a.events.append(mixed).await.unwrap();
        assert_eq!((mixed.inserted, mixed.duplicates), (2, 1), "{}", a.name);
        let stats = a.events.stats().await.unwrap();
        assert_eq!((stats.events, stats.users), (9, 4), "{}", a.name);
        assert_eq!(
            stats.first_event_time,
            Some(T - 200 * DAY_SECS),
            "{}",
            a.name
        );
        assert_eq!(stats.last_event_time, Some(T + 5 * DAY_SECS), "{}", a.name);
        a.events.ping().await.unwrap();
    }
}

/// Every store keeps the newest `retention` snapshots, rows and headers
/// alike, lists them newest first, and serves the newest. (ClickHouse kept
/// every header while SQLite pruned them: this failed before the rule moved
/// into the domain.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_retained_alike_and_the_newest_is_served() {
    let spec = FeatureSpec::standard();
    for a in adapters().await {
        a.events.append(history()).await.unwrap();
        let as_ofs = [T - 5 * DAY_SECS, T - DAY_SECS, T, T + DAY_SECS];
        for as_of in as_ofs {
            let s = a.features.build_snapshot(&spec, as_of).await.unwrap();
            assert_eq!(s.as_of, as_of, "{}", a.name);
            assert_eq!(s.features, spec.len(), "{}", a.name);
        }
        // Rebuilding the newest replaces it, it does not add one.
        a.features
            .build_snapshot(&spec, T + DAY_SECS)
            .await
            .unwrap();
        let listed: Vec<i64> = a
            .features
            .snapshots()
            .await
            .unwrap()
            .iter()
            .map(|s| s.as_of)
            .collect();
        assert_eq!(listed, vec![T + DAY_SECS, T], "{}: headers kept", a.name);
        let latest = a.features.latest_snapshot().await.unwrap().unwrap();
        assert_eq!(latest.as_of(), T + DAY_SECS, "{}", a.name);
        assert_eq!(latest.fingerprint(), spec.fingerprint(), "{}", a.name);
        assert_eq!(latest.feature_names(), spec.names().as_slice());
        // Users with an event at or before as_of: 1, 2, 3.
        assert_eq!(latest.len(), 3, "{}", a.name);
        assert!(!latest.contains(4), "{}", a.name);
    }
}

/// Same rows, same labels, same rounding on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_sets_agree_and_are_rounded_like_snapshots() {
    let spec = FeatureSpec::standard();
    let policy = LabelPolicy::inactivity(30, 30);
    let mut reference: Option<(Vec<u64>, Vec<bool>, Vec<f64>)> = None;
    for a in adapters().await {
        a.events.append(history()).await.unwrap();
        let set = a
            .features
            .training_set(&spec, &policy, T, RowSample::ALL)
            .await
            .unwrap();
        assert_eq!(set.user_ids, vec![1, 2], "{}: eligible users", a.name);
        assert_eq!(set.labels, vec![false, true], "{}: labels", a.name);
        assert_eq!(set.feature_names, spec.names());
        assert!(
            set.rows.iter().all(|v| *v == quantize(*v)),
            "{}: rows rounded to f32 like snapshots",
            a.name
        );
        match &reference {
            None => reference = Some((set.user_ids, set.labels, set.rows)),
            Some((_, _, rows)) => {
                for (i, (x, y)) in rows.iter().zip(&set.rows).enumerate() {
                    let name = &spec.names()[i % spec.len()];
                    assert!(
                        (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                        "{}: {name} differs: {x} vs {y}",
                        a.name
                    );
                }
            }
        }
    }
}

/// A capped set keeps the same users on every store (the SQL `WHERE` and
/// the embedded scan apply one hash), with the rows the full set has for
/// them, and about the share asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_training_sets_keep_the_same_users_everywhere() {
    let spec = FeatureSpec::standard();
    let policy = LabelPolicy::inactivity(30, 30);
    // 2000 users, each active before T: all eligible.
    let events: Vec<Event> = (1..=2_000u64)
        .flat_map(|u| {
            let back = (u % 20) as i64 * DAY_SECS;
            [
                event(u, T - back - 3_600, "login", Some("s"), None),
                event(u, T - back / 2, "view", Some("s"), None),
            ]
        })
        .collect();
    let sample = RowSample::share_at(0.3, T);
    let mut reference: Option<Vec<u64>> = None;
    for a in adapters().await {
        a.events.append(events.clone()).await.unwrap();
        let full = a
            .features
            .training_set(&spec, &policy, T, RowSample::ALL)
            .await
            .unwrap();
        assert_eq!(full.len(), 2_000, "{}", a.name);
        let part = a
            .features
            .training_set(&spec, &policy, T, sample)
            .await
            .unwrap();
        let expected: Vec<u64> = full
            .user_ids
            .iter()
            .copied()
            .filter(|u| sample.keeps(*u))
            .collect();
        assert_eq!(
            part.user_ids, expected,
            "{}: the users the hash keeps",
            a.name
        );
        // Binomial(2000, 0.3): sd ~20.
        assert!(
            (500..=700).contains(&part.len()),
            "{}: {}",
            a.name,
            part.len()
        );
        for (i, u) in part.user_ids.iter().enumerate() {
            let j = full.user_ids.binary_search(u).unwrap();
            assert_eq!(part.row(i), full.row(j), "{}: user {u}'s features", a.name);
            assert_eq!(
                part.labels[i], full.labels[j],
                "{}: user {u}'s label",
                a.name
            );
        }
        match &reference {
            None => reference = Some(part.user_ids),
            Some(users) => assert_eq!(&part.user_ids, users, "{} vs sqlite", a.name),
        }
    }
}

/// Several cutoffs at once (one pass over the events where the store can)
/// give exactly the sets asked one by one, in the order asked, with each
/// cutoff's sample applied: over enough users and events that the embedded
/// scan splits them into many chunks across threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_sets_at_several_cutoffs_equal_the_sets_one_by_one() {
    let spec = FeatureSpec::standard();
    let policy = LabelPolicy::inactivity(14, 30);
    // 3000 users, 1..=40 events each spread over 120 days before T + 30d:
    // every cutoff sees some users churn and some stay.
    let events: Vec<Event> = (1..=3_000u64)
        .flat_map(|u| {
            let n = 1 + (u * 7 % 40) as i64;
            let start = T - 90 * DAY_SECS + (u % 60) as i64 * DAY_SECS;
            (0..n).map(move |i| {
                let kind = ["login", "view", "purchase"][(i as usize + u as usize) % 3];
                let amount = (kind == "purchase").then_some((u % 13) as f64 + 0.5);
                event(
                    u,
                    start + i * (u as i64 % 5 + 1) * 20_000,
                    kind,
                    Some("s"),
                    amount,
                )
            })
        })
        .collect();
    let cuts = [
        (T, RowSample::ALL),
        (
            T - 30 * DAY_SECS,
            RowSample::share_at(0.5, T - 30 * DAY_SECS),
        ),
        (T - 14 * DAY_SECS, RowSample::ALL),
    ];
    for a in adapters().await {
        a.events.append(events.clone()).await.unwrap();
        let read = a
            .features
            .training_sets(&spec, &policy, &cuts, Some(T + 30 * DAY_SECS))
            .await
            .unwrap();
        let together = read.sets;
        // The snapshot read in the same pass is the one computed alone.
        let snapshot = read.snapshot.expect("a snapshot was asked for").unwrap();
        let alone = a
            .features
            .compute_snapshot(&spec, T + 30 * DAY_SECS)
            .await
            .unwrap();
        assert_eq!(snapshot.len(), 3_000, "{}", a.name);
        assert_eq!(snapshot.as_of(), alone.as_of());
        assert_eq!(snapshot.fingerprint(), alone.fingerprint());
        for (user, _) in alone.users() {
            assert_eq!(
                snapshot.features(user),
                alone.features(user),
                "{}: user {user}",
                a.name
            );
        }
        assert_eq!(together.len(), cuts.len(), "{}", a.name);
        for ((cutoff, sample), set) in cuts.iter().zip(&together) {
            let alone = a
                .features
                .training_set(&spec, &policy, *cutoff, *sample)
                .await
                .unwrap();
            assert!(alone.len() > 100, "{}: {} rows", a.name, alone.len());
            assert!(
                alone.labels.iter().any(|l| *l) && alone.labels.iter().any(|l| !*l),
                "{}: both labels at {cutoff}",
                a.name
            );
            assert_eq!(
                set.user_ids, alone.user_ids,
                "{}: users at {cutoff}",
                a.name
            );
            assert_eq!(set.labels, alone.labels, "{}: labels at {cutoff}", a.name);
            assert_eq!(set.rows, alone.rows, "{}: rows at {cutoff}", a.name);
            assert_eq!(set.feature_names, spec.names());
        }
        let unsampled = a
            .features
            .training_set(&spec, &policy, cuts[1].0, RowSample::ALL)
            .await
            .unwrap();
        assert!(
            together[1].len() < unsampled.len() * 3 / 4,
            "{}: the sample kept {} of {} users",
            a.name,
            together[1].len(),
            unsampled.len()
        );
    }
}

/// An empty store: no snapshot, empty sets, empty stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_answers_with_nothing() {
    let spec = FeatureSpec::standard();
    let policy = LabelPolicy::inactivity(30, 30);
    for a in adapters().await {
        assert!(
            a.features.latest_snapshot().await.unwrap().is_none(),
            "{}",
            a.name
        );
        assert!(
            a.features.snapshots().await.unwrap().is_empty(),
            "{}",
            a.name
        );
        let stats = a.events.stats().await.unwrap();
        assert_eq!(
            (stats.events, stats.first_event_time),
            (0, None),
            "{}",
            a.name
        );
        let set = a
            .features
            .training_set(&spec, &policy, T, RowSample::ALL)
            .await
            .unwrap();
        assert!(set.is_empty(), "{}", a.name);
    }
}
