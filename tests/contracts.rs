//! Contract suites of the event-store and feature-store ports, generic over
//! the adapter and run once per adapter (`sqlite_store::*`,
//! `memory_store::*`, `clickhouse_store::*`): the embedded SQLite store
//! and the in-memory fake the use-case unit tests rely on need no server;
//! the ClickHouse store (the 18.16 server from scripts/clickhouse.sh;
//! `CHURN_TEST_CLICKHOUSE_URL` overrides) fails loudly without one. The registry's suite is
//! `tests/registry.rs` (local, S3, memory).
//!
//! Rules that are written once in the domain (snapshot retention, header,
//! row width, rounding, the label windows) are checked here through each
//! adapter, so an adapter that applies them differently fails by name.

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/live_check.rs"]
mod live_check;

use std::sync::Arc;

use churn::application::ingest::{Delivery, IngestEvents, SourceKind};
use churn::application::ports::{
    Erasure, EventStore, FeatureStore, LogPosition, RawRecord, RejectTally,
};
use churn::domain::event::{Event, TimePolicy};
use churn::domain::features::FeatureSpec;
use churn::domain::label::LabelPolicy;
use churn::domain::sampling::RowSample;
use churn::domain::snapshot::quantize;
use churn::domain::time::DAY_SECS;
use churn::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};
use churn::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};
use churn::testing::{MemoryDeadLetters, MemoryStore};

const T: i64 = 1_767_225_600; // 2026-01-01 00:00:00 UTC
const RETENTION: usize = 2;

/// One adapter under test, both ports.
struct Adapter {
    name: &'static str,
    events: Arc<dyn EventStore>,
    features: Arc<dyn FeatureStore>,
    erasure: Arc<dyn Erasure>,
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

async fn sqlite() -> Adapter {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(SqliteOptions {
        path: dir.path().join("churn.db"),
        synchronous_full: false,
        snapshot_retention: RETENTION,
    })
    .unwrap();
    Adapter {
        name: "sqlite",
        events: Arc::new(sqlite.clone()),
        features: Arc::new(sqlite.clone()),
        erasure: Arc::new(sqlite),
        _guard: Guard::Dir(dir),
    }
}

async fn clickhouse() -> Adapter {
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
        // The same suite against the two-shard cluster (scripts/test.sh
        // runs it twice).
        cluster: std::env::var("CHURN_TEST_CLICKHOUSE_CLUSTER").unwrap_or_default(),
        shard_urls: std::env::var("CHURN_TEST_CLICKHOUSE_SHARD_URLS")
            .unwrap_or_default()
            .split(',')
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect(),
    })
    .unwrap();
    clickhouse
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("ClickHouse at {url} unusable ({e}): scripts/clickhouse.sh"));
    Adapter {
        name: "clickhouse",
        events: Arc::new(clickhouse.clone()),
        features: Arc::new(clickhouse.clone()),
        erasure: Arc::new(clickhouse.clone()),
        _guard: Guard::Database(Box::new(clickhouse)),
    }
}

async fn memory() -> Adapter {
    let memory = MemoryStore::new(RETENTION);
    Adapter {
        name: "memory",
        events: Arc::new(memory.clone()),
        features: Arc::new(memory.clone()),
        erasure: Arc::new(memory),
        _guard: Guard::None,
    }
}

/// Every contract, once per adapter: `sqlite::NAME`, `memory::NAME` and
/// `clickhouse::NAME`. The first two need no server; the ClickHouse ones
/// fail loudly without one.
macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        mod sqlite_store {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::sqlite().await).await })*
        }
        mod memory_store {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::memory().await).await })*
        }
        mod clickhouse_store {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::clickhouse().await).await })*
        }
    };
}

contracts!(
    appends_are_idempotent_and_stats_agree,
    snapshots_are_retained_alike_and_the_newest_is_served,
    training_sets_agree_and_are_rounded_like_snapshots,
    sampled_training_sets_keep_the_same_users_everywhere,
    training_sets_at_several_cutoffs_equal_the_sets_one_by_one,
    an_empty_store_answers_with_nothing,
    identical_lines_are_kept_and_only_redeliveries_are_skipped,
    a_second_name_on_a_key_is_refused_everywhere,
    refunds_are_stored_and_features_separate_them_alike,
    reject_counts_accumulate_per_source_and_field,
    live_features_equal_a_batch_build_at_any_time,
    erased_users_leave_no_row_behind,
    retention_drops_only_older_events,
);

/// Erasure: every row of the erased users goes (events, feature rows,
/// names), the counts say what went, the others' rows are untouched, and
/// erasing again removes nothing.
async fn erased_users_leave_no_row_behind(a: Adapter) {
    let name = churn::domain::user::UserId::parse("erase-me@example.com").unwrap();
    let named = name.key();
    let mut events = history();
    let policy = TimePolicy::at(T + 400 * DAY_SECS, 0);
    events.push(Event::new(name.clone(), T - 4 * DAY_SECS, "login", None, None, policy).unwrap());
    events.push(
        Event::new(
            name.clone(),
            T - DAY_SECS,
            "purchase",
            None,
            Some(3.5),
            policy,
        )
        .unwrap(),
    );
    assert!(
        a.events
            .register_names(&[(named, "erase-me@example.com")])
            .await
            .unwrap()
            .is_empty()
    );
    a.events.append(events).await.unwrap();
    let spec = FeatureSpec::standard();
    a.features.build_snapshot(&spec, T).await.unwrap();
    let before = a.events.stats().await.unwrap();
    let erased = a.erasure.forget_users(&[1, named]).await.unwrap();
    assert_eq!(erased.events, 5, "{}: {erased:?}", a.name);
    assert_eq!(erased.feature_rows, 2, "{}: {erased:?}", a.name);
    assert_eq!(erased.names, 1, "{}: {erased:?}", a.name);
    let after = a.events.stats().await.unwrap();
    assert_eq!(after.events, before.events - 5, "{}", a.name);
    assert_eq!(after.users, before.users - 2, "{}", a.name);
    let snapshot = a.features.latest_snapshot(None).await.unwrap().unwrap();
    assert!(
        !snapshot.contains(1) && !snapshot.contains(named),
        "{}",
        a.name
    );
    assert!(snapshot.contains(2), "{}: the others stay", a.name);
    for user in [1, named] {
        let left = a.features.user_events(&spec, user, 100).await.unwrap();
        assert!(
            left.is_none_or(|e| e.is_empty()),
            "{}: events of {user} left",
            a.name
        );
    }
    assert!(
        a.events.user_names(&[named]).await.unwrap().is_empty(),
        "{}: the name is gone",
        a.name
    );
    let again = a.erasure.forget_users(&[1, named]).await.unwrap();
    assert_eq!(again, Default::default(), "{}", a.name);
}

/// Retention drops events strictly older than the cutoff, nothing else.
async fn retention_drops_only_older_events(a: Adapter) {
    a.events.append(history()).await.unwrap();
    let dropped = a
        .erasure
        .drop_events_before(T - 5 * DAY_SECS)
        .await
        .unwrap();
    assert_eq!(
        dropped, 2,
        "{}: the events 10 and 200 days before T",
        a.name
    );
    let stats = a.events.stats().await.unwrap();
    assert_eq!(stats.events, 4, "{}", a.name);
    assert_eq!(stats.first_event_time, Some(T - 3 * DAY_SECS), "{}", a.name);
    assert_eq!(
        a.erasure
            .drop_events_before(T - 5 * DAY_SECS)
            .await
            .unwrap(),
        0
    );
}

/// Live features (one user read, evaluated in Rust) against the store's
/// own batch computation, for random specs, late events and redeliveries:
/// bit for bit, except float-sum order in ClickHouse's SQL sums.
async fn live_features_equal_a_batch_build_at_any_time(a: Adapter) {
    let (cases, tolerant) = match a.name {
        "clickhouse" => (12, true),
        _ => (40, false),
    };
    live_check::live_equals_batch(a.events.clone(), a.features.clone(), cases, tolerant).await;
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

async fn appends_are_idempotent_and_stats_agree(a: Adapter) {
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

/// Every store keeps the newest `retention` snapshots, rows and headers
/// alike, lists them newest first, and serves the newest. (ClickHouse kept
/// every header while SQLite pruned them: this failed before the rule moved
/// into the domain.)
async fn snapshots_are_retained_alike_and_the_newest_is_served(a: Adapter) {
    let spec = FeatureSpec::standard();
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
    let latest = a.features.latest_snapshot(None).await.unwrap().unwrap();
    assert_eq!(latest.as_of(), T + DAY_SECS, "{}", a.name);
    assert_eq!(latest.fingerprint(), spec.fingerprint(), "{}", a.name);
    assert_eq!(latest.feature_names(), spec.names().as_slice());
    // Users with an event at or before as_of: 1, 2, 3.
    assert_eq!(latest.len(), 3, "{}", a.name);
    assert!(!latest.contains(4), "{}", a.name);
}

/// Same rows, same labels, same rounding on every store.
async fn training_sets_agree_and_are_rounded_like_snapshots(a: Adapter) {
    let spec = FeatureSpec::standard();
    let policy = LabelPolicy::inactivity(30, 30);
    // The in-memory fake is the reference every adapter is held to.
    let reference = memory().await;
    reference.events.append(history()).await.unwrap();
    let expected = reference
        .features
        .training_set(&spec, &policy, T, RowSample::ALL)
        .await
        .unwrap();
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
    assert_eq!(expected.rows.len(), set.rows.len(), "{}", a.name);
    for (i, (x, y)) in expected.rows.iter().zip(&set.rows).enumerate() {
        let name = &spec.names()[i % spec.len()];
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            "{}: {name} differs: {x} vs {y}",
            a.name
        );
    }
}

/// A capped set keeps the same users on every store (the SQL `WHERE` and
/// the embedded scan apply one hash), with the rows the full set has for
/// them, and about the share asked for.
async fn sampled_training_sets_keep_the_same_users_everywhere(a: Adapter) {
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
    // The in-memory fake is the reference every adapter is held to.
    let reference = memory().await;
    reference.events.append(events.clone()).await.unwrap();
    let reference_users = reference
        .features
        .training_set(&spec, &policy, T, sample)
        .await
        .unwrap()
        .user_ids;
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
    assert_eq!(
        part.user_ids, reference_users,
        "{} vs the reference",
        a.name
    );
}

/// Several cutoffs at once (one pass over the events where the store can)
/// give exactly the sets asked one by one, in the order asked, with each
/// cutoff's sample applied: over enough users and events that the embedded
/// scan splits them into many chunks across threads.
async fn training_sets_at_several_cutoffs_equal_the_sets_one_by_one(a: Adapter) {
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

/// An empty store: no snapshot, empty sets, empty stats.
async fn an_empty_store_answers_with_nothing(a: Adapter) {
    let spec = FeatureSpec::standard();
    let policy = LabelPolicy::inactivity(30, 30);
    assert!(
        a.features.latest_snapshot(None).await.unwrap().is_none(),
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

fn lines(texts: &[&str], topic_offsets: Option<(&str, i64)>) -> Vec<RawRecord> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut r = RawRecord::new(t.as_bytes().to_vec(), format!("line {}", i + 1));
            if let Some((topic, first)) = topic_offsets {
                r.position = Some(LogPosition {
                    topic: topic.into(),
                    partition: 0,
                    offset: first + i as i64,
                });
            }
            r
        })
        .collect()
}

/// The identity rule through the one pipeline, on every store: identical
/// lines of one delivery are distinct events, the same delivery again is
/// all redelivery; Kafka records are told apart by position; a producer's
/// event id is the identity wherever it comes from.
async fn identical_lines_are_kept_and_only_redeliveries_are_skipped(a: Adapter) {
    let line = r#"{"user_id":"u-5f2c","event_time":"2025-12-30 10:00:00","event_type":"purchase","amount":4.5}"#;
    let three = [line, line, line];
    let ingest = IngestEvents::new(a.events.clone(), 400 * DAY_SECS, 1_000);
    let mut dlq = MemoryDeadLetters::default();
    let file = |n| (Delivery::new(SourceKind::File), n);
    let (mut d, _) = file(0);
    let first = ingest
        .process(lines(&three, None), &mut d, &mut dlq)
        .await
        .unwrap();
    assert_eq!((first.inserted, first.duplicates), (3, 0), "{}", a.name);
    let (mut d, _) = file(1);
    let again = ingest
        .process(lines(&three, None), &mut d, &mut dlq)
        .await
        .unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 3), "{}", a.name);
    // Kafka: three identical messages at three offsets are three
    // events; the same offsets read again are redeliveries.
    let mut k = Delivery::new(SourceKind::Kafka);
    let streamed = ingest.prepare(lines(&three, Some(("events", 10))), &mut k);
    let s = ingest.store_batch(&streamed).await.unwrap().outcome;
    assert_eq!((s.inserted, s.duplicates), (3, 0), "{}: kafka", a.name);
    let replay = ingest.prepare(lines(&three, Some(("events", 10))), &mut k);
    let r = ingest.store_batch(&replay).await.unwrap().outcome;
    assert_eq!(
        (r.inserted, r.duplicates),
        (0, 3),
        "{}: kafka replay",
        a.name
    );
    // A producer id: one event, whether it comes again by file or at
    // another offset.
    let with_id = r#"{"user_id":"u-5f2c","event_time":"2025-12-30 11:00:00","event_type":"view","event_id":"m-1"}"#;
    let (mut d, _) = file(2);
    let once = ingest
        .process(lines(&[with_id, with_id], None), &mut d, &mut dlq)
        .await
        .unwrap();
    assert_eq!(
        (once.inserted, once.duplicates),
        (1, 1),
        "{}: event_id",
        a.name
    );
    let elsewhere = ingest.prepare(lines(&[with_id], Some(("events", 99))), &mut k);
    let e = ingest.store_batch(&elsewhere).await.unwrap().outcome;
    assert_eq!(
        (e.inserted, e.duplicates),
        (0, 1),
        "{}: event_id by kafka",
        a.name
    );
    let stats = a.events.stats().await.unwrap();
    assert_eq!((stats.events, stats.users), (7, 1), "{}", a.name);
    // The name is kept beside its key.
    let key = churn::domain::user::name_key("u-5f2c");
    let names = a.events.user_names(&[key, 42]).await.unwrap();
    assert_eq!(names.len(), 1, "{}", a.name);
    assert_eq!(names[&key], "u-5f2c", "{}", a.name);
    assert!(dlq.rejected.lock().unwrap().is_empty(), "{}", a.name);
}

/// A key already held by another name is reported, never overwritten.
async fn a_second_name_on_a_key_is_refused_everywhere(a: Adapter) {
    let key = churn::domain::user::name_key("alice");
    assert!(
        a.events
            .register_names(&[(key, "alice")])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        a.events
            .register_names(&[(key, "alice")])
            .await
            .unwrap()
            .is_empty(),
        "{}: the same name again is fine",
        a.name
    );
    assert_eq!(
        a.events.register_names(&[(key, "mallory")]).await.unwrap(),
        vec![key],
        "{}",
        a.name
    );
    assert_eq!(a.events.user_names(&[key]).await.unwrap()[&key], "alice");
}

/// Negative amounts are stored, counted per type, and features tell them
/// apart (sign filter, min and max) with the same values on every store.
async fn refunds_are_stored_and_features_separate_them_alike(a: Adapter) {
    let spec = FeatureSpec::from_toml(
        r#"
[[feature]]
name = "spend_net"
aggregation = "sum_amount"
[[feature]]
name = "spend"
aggregation = "sum_amount"
amount_sign = "positive"
[[feature]]
name = "refunded"
aggregation = "sum_amount"
amount_sign = "negative"
[[feature]]
name = "refunds"
aggregation = "count"
amount_sign = "negative"
[[feature]]
name = "largest_refund"
aggregation = "min_amount"
[[feature]]
name = "largest_sale"
aggregation = "max_amount"
[[feature]]
name = "refunds_30d"
aggregation = "count"
amount_sign = "negative"
window_days = 30
[[feature]]
name = "days_since_refund"
aggregation = "days_since_last"
amount_sign = "negative"
"#,
        "refunds.toml",
    )
    .unwrap();
    let d = DAY_SECS;
    let history = vec![
        event(1, T - 60 * d, "purchase", None, Some(30.0)),
        event(1, T - 40 * d, "purchase", None, Some(-12.5)),
        event(1, T - 10 * d, "purchase", None, Some(-2.0)),
        event(1, T - 5 * d, "view", None, None),
        // Only refunds: the user is kept, with negative sums.
        event(2, T - 3 * d, "purchase", None, Some(-7.0)),
    ];
    let expected_1 = [15.5, 30.0, -14.5, 2.0, -12.5, 30.0, 1.0, 10.0];
    let expected_2 = [-7.0, 0.0, -7.0, 1.0, -7.0, -7.0, 1.0, 3.0];
    a.events.append(history.clone()).await.unwrap();
    let snap = a.features.compute_snapshot(&spec, T).await.unwrap();
    assert_eq!(snap.features(1).unwrap(), expected_1, "{}", a.name);
    assert_eq!(snap.features(2).unwrap(), expected_2, "{}", a.name);
    let types = a.events.type_counts().await.unwrap();
    let purchase = types.iter().find(|t| t.event_type == "purchase").unwrap();
    assert_eq!(purchase.with_negative_amount, 3, "{}", a.name);
    assert!(
        (purchase.negative_amount_sum + 21.5).abs() < 1e-9,
        "{}",
        a.name
    );
    assert!(
        (purchase.positive_amount_sum - 30.0).abs() < 1e-9,
        "{}",
        a.name
    );
}

/// Reject counts add up per source and field, with one example each.
async fn reject_counts_accumulate_per_source_and_field(a: Adapter) {
    let tally = |source: &str, field: &str, count| RejectTally {
        source: source.into(),
        field: field.into(),
        count,
        example: format!("{source}:1: {field}: bad"),
    };
    a.events
        .record_rejects(&[tally("file", "user_id", 3), tally("http", "json", 1)])
        .await
        .unwrap();
    a.events
        .record_rejects(&[tally("file", "user_id", 2)])
        .await
        .unwrap();
    let all = a.events.reject_tallies().await.unwrap();
    assert_eq!(all.len(), 2, "{}: {all:?}", a.name);
    assert_eq!(
        (all[0].source.as_str(), all[0].field.as_str(), all[0].count),
        ("file", "user_id", 5),
        "{}",
        a.name
    );
    assert_eq!(all[0].example, "file:1: user_id: bad");
    assert_eq!(all[1].count, 1, "{}", a.name);
}
