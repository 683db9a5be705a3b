//! Feature-build benchmark: the standard spec (54 features) and a declared
//! 200-feature spec, on the embedded SQLite store and on ClickHouse, over
//! the same generated events, in one run. Prints seconds, users/s and the
//! ratios; asserts nothing about speed.
//!
//! `cargo bench --bench features` — env `BENCH_EVENTS` (default 10_000_000),
//! `CHURN_BENCH_CLICKHOUSE_URL` (default http://127.0.0.1:8123; the server
//! from scripts/clickhouse.sh). The ClickHouse load skips the redelivery
//! check (`dedup_check = false`): this measures the feature build, not ingest.

use std::time::Instant;

use churn::application::generate::{GeneratorOptions, generate};
use churn::application::ports::{EventStore, FeatureStore};
use churn::domain::event::Event;
use churn::domain::features::FeatureSpec;
use churn::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};
use churn::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};

/// 200 features over the generator's types: counts, active days, recency
/// and amounts over many windows.
fn wide_spec() -> FeatureSpec {
    let mut s = String::new();
    let mut n = 0;
    'outer: for t in [
        "login",
        "view",
        "add_to_cart",
        "purchase",
        "support_ticket",
        "logout",
    ] {
        for w in [3, 7, 14, 21, 30, 45, 60, 90, 120, 180] {
            for a in ["count", "active_days", "days_since_first"] {
                if n == 180 {
                    break 'outer;
                }
                s.push_str(&format!(
                    "[[feature]]\nname = \"{t}_{a}_{w}d\"\naggregation = \"{a}\"\nevent_types = [\"{t}\"]\nwindow_days = {w}\n"
                ));
                n += 1;
            }
        }
    }
    for w in [7, 14, 30, 60, 90] {
        for (a, tag) in [
            ("sum_amount", "sum"),
            ("max_amount", "max"),
            ("distinct_sessions", "sess"),
        ] {
            s.push_str(&format!(
                "[[feature]]\nname = \"all_{tag}_{w}d\"\naggregation = \"{a}\"\nwindow_days = {w}\n"
            ));
        }
    }
    for (name, a) in [
        ("last_event_days_ago", "days_since_last"),
        ("days_active", "active_days"),
        ("total_events", "count"),
        ("tenure_days", "days_since_first"),
        ("gap_mean", "gap_mean"),
    ] {
        s.push_str(&format!(
            "[[feature]]\nname = \"{name}\"\naggregation = \"{a}\"\n"
        ));
    }
    FeatureSpec::from_toml(&s, "bench wide spec").expect("valid wide spec")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let target: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let url = std::env::var("CHURN_BENCH_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    // The generator makes ~209 events per user over 120 days.
    let users = (target / 205).max(100);
    let end = 1_780_000_000;
    let t = Instant::now();
    let mut events: Vec<Event> = Vec::new();
    generate(
        GeneratorOptions {
            users,
            days: 120,
            end,
            seed: 17,
            churn_share: 0.35,
            string_ids: false,
        },
        |e| events.push(e),
    );
    println!(
        "generated {} events for {users} users in {:.1}s",
        events.len(),
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(SqliteOptions {
        path: dir.path().join("churn.db"),
        synchronous_full: false,
        snapshot_retention: 2,
    })?;
    let db = format!("churn_bench_features_{}", std::process::id());
    let ch = ClickHouseStore::new(&ClickHouseOptions {
        url: url.clone(),
        database: db,
        user: "default".into(),
        password: String::new(),
        validation: false,
        snapshot_retention: 2,
        dedup_check: false,
        cluster: String::new(),
        shard_urls: Vec::new(),
    })?;
    ch.migrate()
        .await
        .map_err(|e| anyhow::anyhow!("ClickHouse at {url}: {e} (scripts/clickhouse.sh)"))?;
    let stores: [(&str, &dyn EventStore, &dyn FeatureStore); 2] =
        [("sqlite", &sqlite, &sqlite), ("clickhouse", &ch, &ch)];
    for (name, store, _) in stores {
        let t = Instant::now();
        for chunk in events.chunks(100_000) {
            store.append(chunk.to_vec()).await?;
        }
        println!("load {name:<10} {:>8.1}s", t.elapsed().as_secs_f64());
    }
    drop(events);
    let specs = [("standard", FeatureSpec::standard()), ("wide", wide_spec())];
    let mut secs = Vec::new();
    println!(
        "{:<10} {:<9} {:>9} {:>10} {:>12}",
        "store", "spec", "features", "seconds", "users/s"
    );
    for (spec_name, spec) in &specs {
        for (name, _, features) in stores {
            let t = Instant::now();
            let summary = features.build_snapshot(spec, end).await?;
            let s = t.elapsed().as_secs_f64();
            println!(
                "{name:<10} {spec_name:<9} {:>9} {s:>10.2} {:>12.0}",
                spec.len(),
                summary.users as f64 / s
            );
            secs.push(((*name).to_string(), (*spec_name).to_string(), s));
        }
    }
    let get = |store: &str, spec: &str| {
        secs.iter()
            .find(|(a, b, _)| a == store && b == spec)
            .map_or(f64::NAN, |x| x.2)
    };
    for spec in ["standard", "wide"] {
        println!(
            "{spec}: clickhouse / sqlite time ratio {:.2}",
            get("clickhouse", spec) / get("sqlite", spec)
        );
    }
    for store in ["sqlite", "clickhouse"] {
        println!(
            "{store}: wide (200) / standard (54) time ratio {:.2}",
            get(store, "wide") / get(store, "standard")
        );
    }
    ch.drop_database().await?;
    Ok(())
}
