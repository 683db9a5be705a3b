//! The ClickHouse backend against a real server (scripts/clickhouse.sh starts
//! Debian's 18.16 on 127.0.0.1:8123; `CHURN_TEST_CLICKHOUSE_URL` overrides).
//! A missing server fails these tests loudly: they never skip.
//!
//! - Parity: the same events (generated plus edge cases: events exactly at
//!   T and at T+H, duplicates, single-event users, empty windows, unknown
//!   types, null sessions) give identical feature rows and labels from the
//!   embedded store and from ClickHouse.
//! - End to end in ClickHouse mode: ingest → features → train → register →
//!   serve → /predict.
//! - A hung ClickHouse (behind a proxy that accepts and never answers):
//!   writes end with 503 by their deadline, `/readyz` names the store,
//!   `/predict` keeps answering from memory, all recover when it answers.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/proxy.rs"]
mod proxy;

use churn::application::generate::{GeneratorOptions, generate};
use churn::application::ports::{EventStore, FeatureStore};
use churn::config::StoreKind;
use churn::domain::event::{Event, TimePolicy};
use churn::domain::features::{Aggregation, FeatureSpec};
use churn::domain::label::LabelPolicy;
use churn::domain::sampling::RowSample;
use churn::domain::time::DAY_SECS;
use churn::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};
use churn::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};
use churn::startup::Services;

fn url() -> String {
    std::env::var("CHURN_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn unique_db(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("churn_test_{tag}_{}_{nanos}", std::process::id())
}

fn options(db: &str) -> ClickHouseOptions {
    ClickHouseOptions {
        url: url(),
        database: db.to_string(),
        user: "default".into(),
        password: String::new(),
        // Debian's 18.16 cannot validate; a modern server can (set the env).
        validation: std::env::var("CHURN_TEST_CLICKHOUSE_VALIDATION").is_ok_and(|v| v == "true"),
        snapshot_retention: 3,
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
    }
}

async fn clickhouse(db: &str) -> ClickHouseStore {
    let store = ClickHouseStore::new(&options(db)).unwrap();
    if let Err(e) = store.ping().await {
        panic!(
            "ClickHouse is not reachable at {} ({e}); start it with scripts/clickhouse.sh",
            url()
        );
    }
    store.migrate().await.unwrap();
    store
}

const T: i64 = 1_767_225_600; // 2026-01-01 00:00:00 UTC

fn edge_cases() -> Vec<Event> {
    let p = TimePolicy::at(T + 400 * DAY_SECS, 0);
    let e = |u: u64, t: i64, k: &str, s: Option<&str>, a: Option<f64>| {
        Event::new(u, t, k, s, a, p).unwrap()
    };
    let d = DAY_SECS;
    vec![
        e(900_001, T, "login", Some("x"), None),     // exactly at T
        e(900_002, T - 200 * d, "view", None, None), // one old event: empty windows, capped recency
        e(900_003, T + 5, "login", Some("y"), None), // only after T
        e(900_004, T - 3 * d, "purchase", None, Some(19.99)), // null session
        e(900_004, T - 2 * d, "webinar", Some("w"), None), // unknown type
        e(900_004, T - 2 * d + 60, "purchase", Some("w"), Some(0.01)),
        e(900_005, T - 7 * d, "view", Some("a"), None), // window boundaries
        e(900_005, T - 30 * d, "login", Some("a"), None),
        e(900_005, T - 7 * d + 1, "view", Some("b"), None),
        e(900_006, T - d, "login", Some("c"), None), // label boundary: retained at exactly T+H
        e(900_006, T + 30 * d, "login", Some("c"), None),
        e(900_007, T - d, "login", Some("c"), None), // churned: first event after T+H
        e(900_007, T + 30 * d + 1, "login", Some("c"), None),
        // Explicit churn: cancels in the horizon and stays away ...
        e(900_008, T - d, "login", None, None),
        e(900_008, T + d, "cancel", None, None),
        // ... cancelled before T (already gone) ...
        e(900_009, T - 2 * d, "login", None, None),
        e(900_009, T - d, "cancel", None, None),
        // ... cancels, then comes back within the horizon.
        e(900_010, T - d, "login", Some("s"), None),
        e(900_010, T + d, "cancel", None, None),
        e(900_010, T + 2 * d, "login", Some("s"), None),
        // Window edges of spend_14d: exactly T-14d is out, T-14d+1 in;
        // a purchase without an amount counts but has no amount.
        e(900_011, T - 14 * d, "purchase", None, Some(5.0)),
        e(900_011, T - 14 * d + 1, "purchase", None, Some(7.5)),
        e(900_011, T - d, "purchase", None, None),
        e(900_011, T, "purchase", None, Some(1.25)),
        // Refunds: negative amounts, one of them the user's only amount
        // in a window, one on a type the spec does not name.
        e(900_012, T - 90 * d, "purchase", None, Some(10.0)),
        e(900_012, T - 40 * d, "purchase", None, Some(-4.0)),
        e(900_012, T - 3 * d, "return", None, Some(-6.5)),
        e(900_013, T - 5 * d, "purchase", None, Some(-2.0)),
    ]
}

fn all_events() -> Vec<Event> {
    let mut events = Vec::new();
    generate(
        GeneratorOptions {
            users: 250,
            days: 120,
            end: T + 35 * DAY_SECS,
            seed: 9,
            churn_share: 0.35,
            string_ids: false,
        },
        |e| events.push(e),
    );
    events.extend(edge_cases());
    events
}

/// Same value, allowing sum-order noise in float sums.
fn same(name: &str, a: f64, b: f64) -> bool {
    if name.contains("amount") || name.contains("spend") {
        (a - b).abs() <= 1e-6 * a.abs().max(1.0)
    } else {
        a.to_bits() == b.to_bits()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_and_clickhouse_give_identical_features_and_labels() {
    let db = unique_db("parity");
    let ch = clickhouse(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let lite = SqliteStore::open(SqliteOptions {
        path: dir.path().join("churn.db"),
        synchronous_full: false,
        snapshot_retention: 3,
    })
    .unwrap();
    let events = all_events();
    // Deliver everything, then redeliver a slice and a batch with an
    // internal duplicate: both stores must count each event once.
    for store in [&ch as &dyn EventStore, &lite as &dyn EventStore] {
        for chunk in events.chunks(7_000) {
            store.append(chunk.to_vec()).await.unwrap();
        }
        let again = store.append(events[..500].to_vec()).await.unwrap();
        assert_eq!(again.inserted, 0);
        assert_eq!(again.duplicates, 500);
        let twice = vec![edge_cases()[0].clone(), edge_cases()[0].clone()];
        assert_eq!(store.append(twice).await.unwrap().inserted, 0);
    }
    let (s1, s2) = (ch.stats().await.unwrap(), lite.stats().await.unwrap());
    assert_eq!(s1, s2);
    assert_eq!(s1.events as usize, events.len());

    let spec = FeatureSpec::standard();
    let custom = FeatureSpec::from_toml(
        include_str!("fixtures/every_aggregation.toml"),
        "tests/fixtures/every_aggregation.toml",
    )
    .unwrap();
    let kinds: std::collections::HashSet<_> = custom.defs().iter().map(|d| d.aggregation).collect();
    assert_eq!(
        kinds.len(),
        Aggregation::ALL.len(),
        "the fixture covers every aggregation"
    );
    let policies = [
        LabelPolicy::inactivity(30, 30),
        LabelPolicy {
            churn_event_types: vec!["cancel".into()],
            ..LabelPolicy::inactivity(30, 30)
        },
        LabelPolicy {
            activity_event_types: vec!["purchase".into(), "login".into()],
            min_events: 2,
            ..LabelPolicy::inactivity(14, 60)
        },
    ];
    for spec in [&spec, &custom] {
        compare_stores(&ch, &lite, spec, &policies).await;
    }
    let a = ch.compute_snapshot(&spec, T).await.unwrap();
    let edge = a.features(900_002).unwrap();
    // Recency is not capped: one event 200 days before T.
    assert_eq!(edge[spec.index_of("last_event_days_ago").unwrap()], 200.0);
    assert_eq!(edge[spec.index_of("events_90d").unwrap()], 0.0);
    let c = ch.compute_snapshot(&custom, T).await.unwrap();
    let v = |user: u64, name: &str| c.features(user).unwrap()[custom.index_of(name).unwrap()];
    assert_eq!(
        v(900_011, "spend_14d"),
        7.5 + 1.25,
        "T-14d is outside, T-14d+1 and T inside"
    );
    assert!(
        (v(900_011, "spend_mean") - (5.0 + 7.5 + 1.25) / 3.0).abs() < 1e-6,
        "absent amounts are skipped"
    );
    // Refunds, as both stores compute them (compared above): counted by
    // sign, summed per type, the largest refund the max of negatives.
    assert_eq!(v(900_012, "refunds_60d"), 2.0);
    assert_eq!(v(900_012, "refunded"), -4.0, "the return is another type");
    assert_eq!(v(900_012, "largest_refund"), -4.0);
    assert_eq!(v(900_012, "spend_min"), -6.5);
    assert_eq!(v(900_012, "sales_mean"), 10.0);
    assert_eq!(v(900_012, "since_last_refund"), 3.0);
    assert_eq!(v(900_013, "sales_mean"), 0.0, "no sale: 0");
    assert_eq!(v(900_013, "spend_max_30d"), -2.0);
    assert_eq!(v(900_011, "sessions_login"), 0.0);
    assert_eq!(v(900_010, "sessions_login"), 1.0);
    assert_eq!(v(900_009, "since_last_cancel"), 1.0);
    assert_eq!(
        v(900_008, "since_last_cancel"),
        1.0,
        "never cancelled by T: the tenure"
    );

    let policy = LabelPolicy::inactivity(30, 30);
    let at_t = ch
        .training_set(&spec, &policy, T, RowSample::ALL)
        .await
        .unwrap();
    let label = |u: u64| {
        at_t.user_ids
            .iter()
            .position(|x| *x == u)
            .map(|i| at_t.labels[i])
    };
    assert_eq!(
        label(900_001),
        Some(true),
        "event exactly at T is history; nothing after"
    );
    assert_eq!(
        label(900_006),
        Some(false),
        "event exactly at T+H is inside the horizon"
    );
    assert_eq!(
        label(900_007),
        Some(true),
        "first event after T+H means churned"
    );
    assert_eq!(label(900_003), None, "not eligible: no event before T");
    assert_eq!(
        label(900_002),
        None,
        "not eligible: inactive in the lookback"
    );
    let explicit = ch
        .training_set(&custom, &policies[1], T, RowSample::ALL)
        .await
        .unwrap();
    let label = |u: u64| {
        explicit
            .user_ids
            .iter()
            .position(|x| *x == u)
            .map(|i| explicit.labels[i])
    };
    assert_eq!(label(900_008), Some(true), "cancelled in the horizon");
    assert_eq!(label(900_009), None, "cancelled before T: already gone");
    assert_eq!(label(900_010), Some(false), "came back after cancelling");
    assert_eq!(
        label(900_006),
        Some(false),
        "quiet without cancelling is not churn"
    );
    ch.drop_database().await.unwrap();
}

/// Snapshots, training sets and labels of `spec` under each policy agree
/// between ClickHouse and the embedded store, row by row.
async fn compare_stores(
    ch: &ClickHouseStore,
    lite: &SqliteStore,
    spec: &FeatureSpec,
    policies: &[LabelPolicy],
) {
    let names = spec.names();
    let x = ch.build_snapshot(spec, T).await.unwrap();
    let y = lite.build_snapshot(spec, T).await.unwrap();
    assert_eq!(x, y);
    let (a, b) = (
        ch.latest_snapshot(None).await.unwrap().unwrap(),
        lite.latest_snapshot(None).await.unwrap().unwrap(),
    );
    assert_eq!((a.len(), a.as_of()), (b.len(), b.as_of()));
    assert_eq!(a.fingerprint(), spec.fingerprint());
    assert!(
        !a.contains(900_003),
        "a user with events only after T has no row"
    );
    let mut compared = 0;
    for user in (1..=250).chain(900_001..=900_011) {
        let (fa, fb) = (a.features(user), b.features(user));
        assert_eq!(fa.is_some(), fb.is_some(), "user {user}");
        let (Some(fa), Some(fb)) = (fa, fb) else {
            continue;
        };
        for (j, name) in names.iter().enumerate() {
            assert!(
                same(name, fa[j], fb[j]),
                "user {user} {name}: clickhouse {} vs embedded {}",
                fa[j],
                fb[j]
            );
        }
        compared += 1;
    }
    assert!(compared > 200);
    for policy in policies {
        for cutoff in [T, T - 14 * DAY_SECS] {
            let (x, y) = (
                ch.training_set(spec, policy, cutoff, RowSample::ALL)
                    .await
                    .unwrap(),
                lite.training_set(spec, policy, cutoff, RowSample::ALL)
                    .await
                    .unwrap(),
            );
            assert_eq!(x.user_ids, y.user_ids, "cutoff {cutoff} {policy:?}");
            assert_eq!(x.labels, y.labels, "cutoff {cutoff} {policy:?}");
            for i in 0..x.len() {
                for (j, name) in names.iter().enumerate() {
                    assert!(
                        same(name, x.row(i)[j], y.row(i)[j]),
                        "user {} {name}: {} vs {}",
                        x.user_ids[i],
                        x.row(i)[j],
                        y.row(i)[j]
                    );
                }
            }
            // The generated users never cancel: at T - 14d explicit churn
            // has no churners, which is a fine answer to compare too.
            if cutoff == T {
                assert!(
                    x.labels.iter().any(|l| *l) && x.labels.iter().any(|l| !*l),
                    "{policy:?} at {cutoff}: both outcomes"
                );
            }
        }
    }
}

async fn sql(query: &str) -> String {
    let r = reqwest::Client::new()
        .post(url())
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    let ok = r.status().is_success();
    let text = r.text().await.unwrap();
    assert!(ok, "{query}: {text}");
    text.trim().to_string()
}

/// Files and HTTP are deduplicated by event id. A slice whose users hold
/// more stored events in its time span than the check brings back (a
/// shuffled file over long histories) is checked by its own ids instead:
/// the counts stay exact either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_over_long_histories_is_checked_by_its_ids() {
    use churn::infrastructure::store::clickhouse::STORED_IDS_PER_SLICE;
    let db = unique_db("long_histories");
    let ch = clickhouse(&db).await;
    let p = TimePolicy::at(T + 400 * DAY_SECS, 0);
    let users = 10u64;
    let per_user = (STORED_IDS_PER_SLICE as u64 / users) + 100;
    let span = 100 * DAY_SECS;
    let history: Vec<Event> = (0..users * per_user)
        .map(|i| {
            let (u, k) = (1 + i % users, i / users);
            let t = T - span + (k as i64 * span) / per_user as i64;
            Event::new(u, t, "view", None, None, p).unwrap()
        })
        .collect();
    for chunk in history.chunks(50_000) {
        let r = ch.append(chunk.to_vec()).await.unwrap();
        assert_eq!(r.duplicates, 0);
    }
    // One stored and one new event per user, at both ends of the span: the
    // slice's users and span cover every stored event, over the cap.
    let mut batch = Vec::new();
    for u in 1..=users {
        batch.push(history[(u - 1) as usize].clone());
        batch.push(Event::new(u, T, "purchase", None, Some(1.0), p).unwrap());
    }
    let r = ch.append(batch.clone()).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (users, users));
    let r = ch.append(batch).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (0, 2 * users));
    let raw = sql(&format!("SELECT count() FROM {db}.events FORMAT TSV")).await;
    assert_eq!(
        raw,
        (users * per_user + users).to_string(),
        "raw rows, no FINAL"
    );
    ch.drop_database().await.unwrap();
}

/// Streamed batches are deduplicated by log position: a redelivered range
/// (crash before the offset commit) is skipped record by record, even when
/// it only partly overlaps, while records at reused offsets with other
/// event ids (a recreated topic) are new. Raw rows, no `FINAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_redeliveries_are_recognised_by_position() {
    use churn::application::ports::LogPosition;
    let db = unique_db("positions");
    let ch = clickhouse(&db).await;
    let events: Vec<Event> = all_events().into_iter().take(3_000).collect();
    let positions: Vec<LogPosition> = (0..events.len())
        .map(|i| LogPosition {
            topic: "events".into(),
            partition: (i % 3) as i32,
            offset: (i / 3) as i64,
        })
        .collect();
    let first = ch
        .append_from_log(&events[..2_000], &positions[..2_000])
        .await
        .unwrap();
    assert_eq!((first.inserted, first.duplicates), (2_000, 0));
    // Redelivery from offset 333 of each partition on: 1,000 seen, 1,000 new.
    let again = ch
        .append_from_log(&events[1_000..], &positions[1_000..])
        .await
        .unwrap();
    assert_eq!((again.inserted, again.duplicates), (1_000, 1_000));
    // The same batch once more: all of it is a redelivery.
    let third = ch
        .append_from_log(&events[1_000..], &positions[1_000..])
        .await
        .unwrap();
    assert_eq!((third.inserted, third.duplicates), (0, 2_000));
    // Offsets 0..99 reused by other events: stored, not mistaken for repeats.
    let p = TimePolicy::at(T + 400 * DAY_SECS, 0);
    let other: Vec<Event> = (0..100)
        .map(|i| Event::new(7_000_000 + i, T + i as i64, "login", None, None, p).unwrap())
        .collect();
    let reused = ch.append_from_log(&other, &positions[..100]).await.unwrap();
    assert_eq!((reused.inserted, reused.duplicates), (100, 0));
    let raw = sql(&format!(
        "SELECT count(), uniqExact(event_id) FROM {db}.events FORMAT TSV"
    ))
    .await;
    assert_eq!(raw, "3100\t3100", "raw rows: no duplicate, nothing lost");
    assert_eq!(ch.stats().await.unwrap().events, 3_100);
    let logged = sql(&format!(
        "SELECT count() FROM {db}.events WHERE log_topic = 'events' FORMAT TSV"
    ))
    .await;
    assert_eq!(logged, "3100", "positions are stored with the events");
    ch.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_refuse_edits() {
    let db = unique_db("migrate");
    let ch = clickhouse(&db).await;
    let again = ch.migrate().await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(
        again.already_applied.len(),
        churn::infrastructure::store::clickhouse::MIGRATIONS.len()
    );
    // Record migration 1 with a different checksum, as if its file had been
    // edited after being applied: migrate must refuse, not re-run it.
    let http = reqwest::Client::new();
    for sql in [
        format!("DROP TABLE {db}.schema_migrations"),
        format!(
            "CREATE TABLE {db}.schema_migrations (version UInt32, name String, checksum String, \
             applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
        ),
        format!(
            "INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES (1, '001_events.sql', 'edited')"
        ),
    ] {
        let r = http.post(url()).body(sql).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let err = ch.migrate().await.unwrap_err().to_string();
    assert!(
        err.contains("001_events.sql") && err.contains("changed"),
        "{err}"
    );
    ch.drop_database().await.unwrap();
}

/// The whole lifecycle in ClickHouse mode on users with string (UUID) ids:
/// generated events ingested, features built, a model trained and served
/// by name, events posted over HTTP stored, and batch scores in
/// `churn.predictions` with the names beside the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_in_clickhouse_mode_with_string_ids() {
    let dir = tempfile::tempdir().unwrap();
    let db = unique_db("e2e");
    let mut settings = harness::settings(dir.path());
    settings.store.kind = StoreKind::Clickhouse;
    settings.clickhouse.url = url();
    settings.clickhouse.database = db.clone();
    settings.clickhouse.validation = options(&db).validation;
    settings.clickhouse.cluster =
        std::env::var("CHURN_TEST_CLICKHOUSE_CLUSTER").unwrap_or_default();
    settings.clickhouse.shard_urls =
        std::env::var("CHURN_TEST_CLICKHOUSE_SHARD_URLS").unwrap_or_default();
    let services = Services::build(settings).await.unwrap();
    let (summary, ingested) = harness::load(&services, 1_000, 2, true).await;
    assert!(summary.users > 350, "{summary:?}");
    let report = services.train.run().await.unwrap();
    assert!(report.promoted, "{}", report.decision);
    let app = harness::spawn(services.clone(), None).await;
    let user = churn::application::generate::user_id_of(7, true).to_string();
    let body: serde_json::Value = app.predict(&user).await.json().await.unwrap();
    assert_eq!(body["user_id"], serde_json::json!(user), "{body}");
    assert_eq!(body["model_version"], "1");
    let p = body["churn_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    // Events posted over HTTP land in ClickHouse.
    let r = app
        .client
        .post(app.url("/events"))
        .body(format!(
            "{{\"user_id\":\"{user}\",\"event_time\":\"2026-01-02 10:00:00\",\"event_type\":\"login\"}}"
        ))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");
    let ready: serde_json::Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    let at_risk: serde_json::Value = app
        .admin_get("/admin/at-risk?limit=3")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        at_risk
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["user_id"].as_str().is_some_and(|u| u.len() == 36)),
        "{at_risk}"
    );
    app.stop().await;
    // Batch scores also land in churn.predictions (migration 005), one row
    // per scored user with its name (010); scoring the same snapshot again
    // replaces them.
    let options_score = churn::application::score::ScoreOptions {
        reasons: Some(2),
        ..Default::default()
    };
    let mut emitted = 0usize;
    let mut named = 0usize;
    let scored = services
        .score
        .run(options_score, |rows| {
            emitted += rows.len();
            named += rows
                .iter()
                .filter(|r| r.user_id.as_name().is_some())
                .count();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(scored.table_rows, Some(scored.written as u64));
    assert_eq!((emitted, named), (scored.written, scored.written));
    assert!(
        scored.written > 300 && scored.written < scored.snapshot_users,
        "{scored:?}"
    );
    services.score.run(options_score, |_| Ok(())).await.unwrap();
    let client = reqwest::Client::new();
    let query = |sql: String| {
        let client = client.clone();
        async move {
            client
                .post(url())
                .body(sql)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let distinct = query(format!(
        "SELECT count(), uniqExact(user_id), countIf(length(user_name) = 36) FROM (SELECT * FROM {db}.predictions FINAL)"
    ))
    .await;
    assert_eq!(
        distinct.trim(),
        format!("{0}\t{0}\t{0}", scored.written),
        "{distinct}"
    );
    let reasons = query(format!(
        "SELECT reasons FROM (SELECT * FROM {db}.predictions FINAL) ORDER BY churn_probability DESC LIMIT 1 FORMAT TabSeparatedRaw"
    ))
    .await;
    let reasons: serde_json::Value = serde_json::from_str(reasons.trim()).unwrap();
    assert_eq!(reasons.as_array().unwrap().len(), 2, "{reasons}");
    let ch = ClickHouseStore::new(&options(&db)).unwrap();
    assert_eq!(
        ch.stats().await.unwrap().events,
        ingested.inserted + 1,
        "every generated event and the posted one"
    );

    // Erasure: a scored user leaves every table (mutations, waited for).
    let name = query(format!(
        "SELECT user_name FROM {db}.predictions ORDER BY user_id LIMIT 1 FORMAT TabSeparatedRaw"
    ))
    .await;
    let erased = churn::domain::user::UserId::parse(name.trim()).unwrap();
    let key = erased.key();
    let count_left = || {
        let db = db.clone();
        async move {
            let mut left = Vec::new();
            for (table, column) in [
                ("events", "user_id"),
                ("feature_vectors", "user_id"),
                ("predictions", "user_id"),
                ("user_names", "user_key"),
            ] {
                let n = query(format!(
                    "SELECT count() FROM {db}.{table} WHERE {column} = {key}"
                ))
                .await;
                left.push(n.trim().parse::<u64>().unwrap());
            }
            left
        }
    };
    let before = count_left().await;
    assert!(before.iter().all(|n| *n > 0), "{before:?}");
    let report = services.forget.forget(&[erased]).await.unwrap();
    assert_eq!(report.rows.events, before[0], "{report:?}");
    assert_eq!(report.rows.predictions, before[2], "{report:?}");
    assert_eq!(report.rows.names, 1, "{report:?}");
    assert_eq!(
        count_left().await,
        vec![0, 0, 0, 0],
        "nothing of the user remains"
    );
    assert_eq!(
        ch.stats().await.unwrap().events,
        ingested.inserted + 1 - before[0]
    );
    ch.drop_database().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_a_clear_unavailable_error() {
    let mut o = options("churn_unreachable");
    o.url = "http://127.0.0.1:9".into();
    let ch = ClickHouseStore::new(&o).unwrap();
    let p = TimePolicy::at(T, 0);
    let event = Event::new(1, T - 10, "login", None, None, p).unwrap();
    for err in [
        ch.ping().await.unwrap_err(),
        ch.append(vec![event]).await.unwrap_err(),
        ch.stats().await.unwrap_err(),
    ] {
        assert!(
            matches!(err, churn::application::ports::StoreError::Unavailable(_)),
            "{err}"
        );
        assert!(err.to_string().contains("clickhouse"), "{err}");
    }
    assert!(ch.migrate().await.is_err());
    // Unsafe database names never reach SQL.
    let mut bad = options("x");
    bad.database = "churn; DROP TABLE t".into();
    assert!(ClickHouseStore::new(&bad).is_err());
}

/// A ClickHouse that accepts connections and never answers must cost
/// bounded waits, never predictions: before the store deadlines, hung
/// `POST /events` held their request permits forever and `/predict`
/// answered 429 once they filled the shared limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_clickhouse_times_out_writes_and_never_takes_predictions_down() {
    let upstream = url().trim_start_matches("http://").to_string();
    let proxy = proxy::CuttableProxy::start(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let db = unique_db("hung");
    let mut settings = harness::settings(dir.path());
    settings.store.kind = StoreKind::Clickhouse;
    settings.clickhouse.url = proxy.url.clone();
    settings.clickhouse.database = db.clone();
    settings.clickhouse.validation = options(&db).validation;
    settings.store.request_timeout_secs = 2;
    settings.server.probe_timeout_ms = 500;
    // Small limits, so that hung writes would fill them many times over.
    settings.server.max_concurrent_requests = 8;
    settings.server.max_concurrent_store_requests = 8;
    let services = Services::build(settings).await.unwrap();
    harness::load(&services, 600, 3, false).await;
    harness::train_and_promote(&services).await;
    let app = harness::spawn(services.clone(), None).await;
    let user = "7";
    assert_eq!(app.predict(user).await.status(), 200);

    proxy.set(proxy::Mode::Hang);
    let started = std::time::Instant::now();
    let writes: Vec<_> = (0..40)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url("/events");
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .body(format!(
                        "{{\"user_id\":{i},\"event_time\":\"2026-01-02 10:00:00\",\"event_type\":\"login\"}}"
                    ))
                    .send()
                    .await
                    .expect("every write is answered (the client gives up after 30 s)");
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap();
                (status, body)
            })
        })
        .collect();
    // While the writes hang on the store: predictions answer, readiness
    // names the store within its probe timeout, liveness holds.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..20 {
        assert_eq!(
            app.predict(user).await.status(),
            200,
            "predictions must not wait on a hung store"
        );
    }
    let probe = std::time::Instant::now();
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    let probed = probe.elapsed();
    assert_eq!(r.status(), 503);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["store_reachable"], false, "{ready}");
    assert!(
        ready["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.starts_with("event store:"))),
        "{ready}"
    );
    assert!(
        probed < std::time::Duration::from_secs(2),
        "readiness took {probed:?}"
    );
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut timed_out = 0;
    let mut shed = 0;
    for w in writes {
        let (status, body) = w.await.unwrap();
        match status {
            503 => {
                assert_eq!(body["error_type"], "store_unavailable", "{body}");
                assert!(
                    body["error"]
                        .as_str()
                        .unwrap()
                        .contains("store.request_timeout_secs"),
                    "{body}"
                );
                timed_out += 1;
            }
            429 => shed += 1,
            other => panic!("a write to a hung store answered {other}: {body}"),
        }
    }
    let took = started.elapsed();
    assert!(timed_out >= 8, "{timed_out} timed out, {shed} shed");
    // Every hung write ended by its 2-second deadline (plus scheduling).
    assert!(
        took < std::time::Duration::from_secs(10),
        "writes took {took:?}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("churn_store_timeouts_total{backend=\"clickhouse\"}")
            && !l.ends_with(" 0")),
        "no store timeout counted"
    );
    eprintln!(
        "hung ClickHouse: {timed_out} writes answered 503 and {shed} 429 within {took:?}; /readyz 503 in {probed:?}; /predict 20/20 200"
    );

    // It answers again: so do writes and readiness.
    proxy.set(proxy::Mode::Up);
    let mut ready_again = false;
    for _ in 0..50 {
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        if r.status() == 200 {
            ready_again = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready_again, "readiness did not recover");
    let r = app
        .client
        .post(app.url("/events"))
        .body("{\"user_id\":1,\"event_time\":\"2026-01-02 10:00:00\",\"event_type\":\"login\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
    let mut plain = options(&db);
    plain.cluster = String::new();
    plain.shard_urls.clear();
    ClickHouseStore::new(&plain)
        .unwrap()
        .drop_database()
        .await
        .unwrap();
}

/// Times outside `DateTime` are refused before they reach the server:
/// 18.16 wrapped `as_of = 1969-12-31` to a snapshot dated 2106-02-06 that
/// then stayed the newest (the serving one) for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_outside_datetime_are_refused_not_wrapped() {
    let db = unique_db("range");
    let ch = clickhouse(&db).await;
    ch.append(edge_cases()).await.unwrap();
    let spec = FeatureSpec::standard();
    let policy = LabelPolicy::inactivity(30, 30);
    for bad in [-DAY_SECS, -1, i64::from(u32::MAX) + 1] {
        let err = ch.build_snapshot(&spec, bad).await.unwrap_err();
        assert!(
            matches!(err, churn::application::ports::StoreError::OutOfRange(_)),
            "{err:?}"
        );
        assert!(err.to_string().contains("DateTime range"), "{err}");
        assert!(ch.compute_snapshot(&spec, bad).await.is_err());
        assert!(
            ch.training_set(&spec, &policy, bad, RowSample::ALL)
                .await
                .is_err()
        );
    }
    // A cutoff whose label window ends past 2106 is refused too.
    let late = i64::from(u32::MAX) - DAY_SECS;
    assert!(
        ch.training_set(&spec, &policy, late, RowSample::ALL)
            .await
            .is_err()
    );
    assert!(ch.snapshots().await.unwrap().is_empty(), "nothing stored");
    // The edges themselves are fine.
    ch.build_snapshot(&spec, 0).await.unwrap();
    ch.build_snapshot(&spec, T).await.unwrap();
    let newest = ch.latest_snapshot(None).await.unwrap().unwrap();
    assert_eq!(newest.as_of(), T);
    ch.drop_database().await.unwrap();
}
