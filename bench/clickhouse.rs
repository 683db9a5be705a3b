//! ClickHouse vs embedded on the same ~10M generated events: insert rate,
//! feature build time, training-set time, and the cost of `FINAL` (the
//! read-time deduplication). Needs the server from scripts/clickhouse.sh.
//!
//! `cargo bench --bench clickhouse` (env `BENCH_USERS`, default 48000 users
//! ≈ 10M events; `CHURN_TEST_CLICKHOUSE_URL`). Prints figures only.

use std::time::Instant;

use churn::application::generate::{GeneratorOptions, generate};
use churn::application::ports::{EventStore, FeatureStore};
use churn::domain::features::FeatureSpec;
use churn::domain::label::LabelPolicy;
use churn::domain::sampling::RowSample;
use churn::domain::time::{DAY_SECS, floor_day};
use churn::infrastructure::store::clickhouse::sql as clickhouse_sql;
use churn::infrastructure::store::clickhouse::{ClickHouseOptions, ClickHouseStore};
use churn::infrastructure::store::sqlite::{SqliteOptions, SqliteStore};

async fn timed_sql(
    client: &reqwest::Client,
    url: &str,
    sql: &str,
) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let r = client.post(url).body(sql.to_string()).send().await?;
    let status = r.status();
    let text = r.text().await?;
    anyhow::ensure!(status.is_success(), "{text}");
    Ok((t.elapsed().as_secs_f64(), text.trim().to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users: u64 = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48_000);
    let url = std::env::var("CHURN_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let end = 1_780_000_000;
    let t = Instant::now();
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
    let n = events.len();
    println!(
        "generated {n} events for {users} users in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let db = format!("churn_bench_{}", std::process::id());
    let ch = ClickHouseStore::new(&ClickHouseOptions {
        url: url.clone(),
        database: db.clone(),
        user: "default".into(),
        password: String::new(),
        validation: false,
        snapshot_retention: 3,
        dedup_check: true,
        cluster: String::new(),
        shard_urls: Vec::new(),
    })?;
    ch.migrate().await?;
    // Same server, redelivery check off: the raw insert ceiling.
    let raw = ClickHouseStore::new(&ClickHouseOptions {
        url: url.clone(),
        database: format!("{db}_raw"),
        user: "default".into(),
        password: String::new(),
        validation: false,
        snapshot_retention: 3,
        dedup_check: false,
        cluster: String::new(),
        shard_urls: Vec::new(),
    })?;
    raw.migrate().await?;
    let dir = tempfile::tempdir()?;
    let lite = SqliteStore::open(SqliteOptions {
        path: dir.path().join("churn.db"),
        synchronous_full: false,
        snapshot_retention: 3,
    })?;

    let mut rates = Vec::new();
    for (name, store, batch) in [
        ("clickhouse", &ch as &dyn EventStore, 100_000usize),
        ("ch no check", &raw as &dyn EventStore, 100_000),
        ("embedded", &lite as &dyn EventStore, 20_000),
    ] {
        let t = Instant::now();
        let mut inserted = 0;
        for chunk in events.chunks(batch) {
            inserted += store.append(chunk.to_vec()).await?.inserted;
        }
        let secs = t.elapsed().as_secs_f64();
        rates.push((name, inserted, secs));
    }
    drop(events);
    println!(
        "\n{:<12} {:>12} {:>10} {:>14}",
        "insert", "events", "seconds", "events/s"
    );
    for (name, inserted, secs) in &rates {
        println!(
            "{name:<12} {inserted:>12} {secs:>10.1} {:>14.0}",
            *inserted as f64 / secs
        );
    }
    // Redelivery of one batch: the check keeps counters exact.
    let spec = FeatureSpec::standard();
    let as_of = floor_day(end) - 10 * DAY_SECS;
    let policy = LabelPolicy::inactivity(30, 30);
    let cutoff = as_of - 30 * DAY_SECS;

    println!(
        "\n{:<34} {:>12} {:>12}",
        "step (seconds)", "clickhouse", "embedded"
    );
    let t = Instant::now();
    let a = ch.build_snapshot(&spec, as_of).await?;
    let ch_build = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let b = lite.build_snapshot(&spec, as_of).await?;
    let lite_build = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        a.users == b.users,
        "snapshot sizes differ: {} vs {}",
        a.users,
        b.users
    );
    println!(
        "{:<34} {ch_build:>12.2} {lite_build:>12.2}",
        format!("feature build ({} users)", a.users)
    );
    let t = Instant::now();
    let x = ch
        .training_set(&spec, &policy, cutoff, RowSample::ALL)
        .await?;
    let ch_train = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let y = lite
        .training_set(&spec, &policy, cutoff, RowSample::ALL)
        .await?;
    let lite_train = t.elapsed().as_secs_f64();
    anyhow::ensure!(x.labels == y.labels, "labels differ");
    println!(
        "{:<34} {ch_train:>12.2} {lite_train:>12.2}",
        format!("training set ({} rows)", x.len())
    );
    let t = Instant::now();
    let snap = ch.latest_snapshot(None).await?.map_or(0, |s| s.len());
    let ch_load = t.elapsed().as_secs_f64();
    let t = Instant::now();
    lite.latest_snapshot(None).await?;
    let lite_load = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {ch_load:>12.2} {lite_load:>12.2}",
        format!("snapshot load for serving ({snap})")
    );

    // The cost of FINAL: the same feature query with and without it.
    let client = reqwest::Client::new();
    let insert = clickhouse_sql::build_snapshot(&spec, &db, clickhouse_sql::Dedup::OnRead, as_of)?;
    let select = &insert[insert.find("SELECT").unwrap_or(0)..];
    let with_final = format!("SELECT count() FROM ({select})");
    let without = with_final.replace(" FINAL ", " ");
    let (f1, c1) = timed_sql(&client, &url, &with_final).await?;
    let (f2, c2) = timed_sql(&client, &url, &without).await?;
    println!(
        "\nfeature query with FINAL {f1:.2}s ({c1} users), without {f2:.2}s ({c2} users): FINAL costs {:.0}%",
        100.0 * (f1 / f2 - 1.0)
    );
    ch.drop_database().await?;
    raw.drop_database().await?;
    Ok(())
}
