//! The two-shard ClickHouse cluster next to the single server, same run,
//! same generated events: insert rate (through the Distributed table with
//! `insert_distributed_sync`), feature build (per shard on its own rows,
//! and through the Distributed table without shard URLs), training set,
//! and how the work split over the shards (events and feature rows per
//! shard). One machine's two cores do not show a speed-up: the figures
//! say what the cluster costs and how evenly it spreads.
//!
//! `cargo bench --bench cluster` after `scripts/clickhouse.sh` and
//! `scripts/clickhouse-cluster.sh` (env `BENCH_USERS`, default 20000;
//! `CHURN_TEST_CLICKHOUSE_URL`, `CHURN_BENCH_CLUSTER_SHARDS`: the shards'
//! HTTP URLs, default the script's ports). Prints figures only.

use std::time::Instant;

use churn::application::generate::{GeneratorOptions, generate};
use churn::application::ports::{EventStore, FeatureStore};
use churn::domain::event::Event;
use churn::domain::features::FeatureSpec;
use churn::domain::label::LabelPolicy;
use churn::domain::sampling::RowSample;
use churn::domain::time::{DAY_SECS, floor_day};
use churn::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};

fn options(url: &str, db: &str, cluster: &str, shards: &[String]) -> ClickHouseOptions {
    ClickHouseOptions {
        url: url.to_string(),
        database: db.to_string(),
        user: "default".into(),
        password: String::new(),
        validation: false,
        snapshot_retention: 3,
        dedup_check: true,
        cluster: cluster.to_string(),
        shard_urls: shards.to_vec(),
    }
}

async fn count(url: &str, sql: &str) -> anyhow::Result<u64> {
    let r = reqwest::Client::new()
        .post(url)
        .body(sql.to_string())
        .send()
        .await?;
    let ok = r.status().is_success();
    let text = r.text().await?;
    anyhow::ensure!(ok, "{sql}: {text}");
    Ok(text.trim().parse()?)
}

struct Figures {
    insert_secs: f64,
    build_secs: f64,
    training_secs: f64,
    users: u64,
    rows: usize,
}

async fn run(store: &ClickHouseStore, events: &[Event], end: i64) -> anyhow::Result<Figures> {
    store.migrate().await?;
    let t = Instant::now();
    for chunk in events.chunks(100_000) {
        store.append(chunk.to_vec()).await?;
    }
    let insert_secs = t.elapsed().as_secs_f64();
    let spec = FeatureSpec::standard();
    let as_of = floor_day(end) - 10 * DAY_SECS;
    let t = Instant::now();
    let summary = store.build_snapshot(&spec, as_of).await?;
    let build_secs = t.elapsed().as_secs_f64();
    let policy = LabelPolicy::inactivity(30, 30);
    let t = Instant::now();
    let set = store
        .training_set(&spec, &policy, as_of - 30 * DAY_SECS, RowSample::ALL)
        .await?;
    let training_secs = t.elapsed().as_secs_f64();
    Ok(Figures {
        insert_secs,
        build_secs,
        training_secs,
        users: summary.users,
        rows: set.len(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users: u64 = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let single = std::env::var("CHURN_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let shards: Vec<String> = std::env::var("CHURN_BENCH_CLUSTER_SHARDS")
        .unwrap_or_else(|_| "http://127.0.0.1:18223,http://127.0.0.1:18224".into())
        .split(',')
        .map(String::from)
        .collect();
    let end = 1_780_000_000;
    let mut events = Vec::new();
    generate(
        GeneratorOptions {
            users,
            days: 120,
            end,
            seed: 21,
            churn_share: 0.35,
            string_ids: false,
        },
        |e| events.push(e),
    );
    println!("{} events of {users} users", events.len());
    let db = format!("churn_bench_cluster_{}", std::process::id());

    let one = ClickHouseStore::new(&options(&single, &db, "", &[]))?;
    let a = run(&one, &events, end).await?;
    one.drop_database().await?;
    let sharded = ClickHouseStore::new(&options(&shards[0], &db, "churn_cluster", &shards))?;
    let b = run(&sharded, &events, end).await?;
    // The same cluster without shard URLs: aggregation through the
    // Distributed table on the first server.
    let through = ClickHouseStore::new(&options(&shards[0], &db, "churn_cluster", &[]))?;
    let spec = FeatureSpec::standard();
    let t = Instant::now();
    through
        .build_snapshot(&spec, floor_day(end) - 11 * DAY_SECS)
        .await?;
    let through_build = t.elapsed().as_secs_f64();

    anyhow::ensure!(
        a.users == b.users,
        "snapshot users differ: {} vs {}",
        a.users,
        b.users
    );
    anyhow::ensure!(
        a.rows == b.rows,
        "training rows differ: {} vs {}",
        a.rows,
        b.rows
    );
    let n = events.len() as f64;
    println!(
        "\n{:<44} {:>14} {:>14}",
        "", "single server", "2-shard cluster"
    );
    println!(
        "{:<44} {:>14.0} {:>14.0}",
        "insert, events/s",
        n / a.insert_secs,
        n / b.insert_secs
    );
    println!(
        "{:<44} {:>14.2} {:>14.2}",
        "feature build, s (per shard on its rows)", a.build_secs, b.build_secs
    );
    println!(
        "{:<44} {:>14} {:>14.2}",
        "feature build, s (through Distributed)", "-", through_build
    );
    println!(
        "{:<44} {:>14.2} {:>14.2}",
        "training set, s", a.training_secs, b.training_secs
    );
    println!("\nwork split over the shards:");
    for (i, url) in shards.iter().enumerate() {
        let ev = count(url, &format!("SELECT count() FROM {db}.events_local")).await?;
        let rows = count(
            url,
            &format!("SELECT count() FROM {db}.feature_vectors_local"),
        )
        .await?;
        let users = count(
            url,
            &format!("SELECT uniqExact(user_id) FROM {db}.events_local"),
        )
        .await?;
        println!(
            "shard {}: {ev} events ({:.1}%), {users} users, {rows} feature rows",
            i + 1,
            100.0 * ev as f64 / n
        );
    }
    sharded.drop_database().await?;
    Ok(())
}
