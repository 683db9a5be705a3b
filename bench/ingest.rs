//! Embedded ingest benchmark: one NDJSON log, written in user order (as the
//! generator yields it) and in time order (as a real log arrives), each
//! ingested through the `churn ingest` path (file source, JSON parse and
//! validation, idempotent append) into a fresh embedded store. Prints
//! events/s of both orders side by side and their ratio, then re-ingests
//! the time-ordered file into the filled store (every event a duplicate:
//! the redelivery path). Asserts nothing about speed.
//!
//! `cargo bench --bench ingest` — env `BENCH_EVENTS` (default 1_000_000),
//! `BENCH_USERS` (default 50_000) and `BENCH_BATCH` (default
//! `ingest.batch_size`).

use std::io::Write;
use std::time::Instant;

use churn::application::generate::{GeneratorOptions, generate};
use churn::application::ingest::IngestReport;
use churn::application::ingest::SourceKind;
use churn::config::Settings;
use churn::domain::event::Event;
use churn::domain::math::splitmix64;
use churn::startup::{FileFormat, Services, event_source, rejects_file};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// About `events` events over `users` users: the generator's full
/// histories, thinned uniformly by a hash of the event id.
fn log(users: u64, events: u64) -> Vec<Event> {
    let options = |users| GeneratorOptions {
        users,
        days: 120,
        end: 1_780_000_000,
        seed: 17,
        churn_share: 0.35,
        string_ids: false,
    };
    // A small run sizes the thinning: the generator's events per user.
    let mut probe = 0u64;
    generate(options(500), |_| probe += 1);
    let per_user = probe as f64 / 500.0;
    let keep = (events as f64 / (per_user * users as f64)).min(1.0);
    let threshold = (keep * u64::MAX as f64) as u64;
    let mut out = Vec::with_capacity(events as usize + events as usize / 10);
    generate(options(users), |e| {
        if splitmix64(e.event_id() as u64) <= threshold {
            out.push(e);
        }
    });
    out
}

fn write(path: &std::path::Path, events: &[Event]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events {
        serde_json::to_writer(&mut out, &e.to_json())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Ingests `file` into the store under `data_dir`, as `churn ingest` does.
async fn ingest(
    data_dir: &std::path::Path,
    file: &std::path::Path,
) -> anyhow::Result<(IngestReport, f64)> {
    let mut settings = Settings {
        data_dir: data_dir.to_path_buf(),
        ..Settings::default()
    };
    if let Ok(batch) = std::env::var("BENCH_BATCH") {
        settings.ingest.batch_size = batch.parse()?;
    }
    let services = Services::build(settings).await?;
    let mut source = event_source(&services.settings, file, FileFormat::of(file)).await?;
    let mut rejects = rejects_file(&services.settings, data_dir.join("rejects.ndjson"));
    let t = Instant::now();
    let report = services
        .ingest
        .run(&mut *source, SourceKind::File, &mut rejects, |_| {})
        .await?;
    Ok((report, t.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (users, target) = (env("BENCH_USERS", 50_000), env("BENCH_EVENTS", 1_000_000));
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let mut events = log(users, target);
    let distinct = {
        let mut ids: Vec<u64> = events.iter().map(|e| e.user_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    println!(
        "log: {} events over {distinct} users (generated and thinned in {:.1}s)",
        events.len(),
        t.elapsed().as_secs_f64()
    );
    let by_user = dir.path().join("by_user.ndjson");
    write(&by_user, &events)?;
    events.sort_by_cached_key(|e| (e.event_time(), e.event_id()));
    let by_time = dir.path().join("by_time.ndjson");
    write(&by_time, &events)?;
    let n = events.len() as f64;
    drop(events);

    let (u, u_secs) = ingest(&dir.path().join("store_u"), &by_user).await?;
    let (t, t_secs) = ingest(&dir.path().join("store_t"), &by_time).await?;
    let (again, again_secs) = ingest(&dir.path().join("store_t"), &by_time).await?;
    for (name, r) in [("user-ordered", &u), ("time-ordered", &t)] {
        anyhow::ensure!(
            r.inserted as f64 == n && r.rejected == 0,
            "{name}: {r:?} for {n} events"
        );
    }
    anyhow::ensure!(
        again.inserted == 0 && again.duplicates as f64 == n,
        "{again:?}"
    );
    let rate = |secs: f64| n / secs;
    println!(
        "user-ordered file: {:>9.0} events/s ({u_secs:.2}s)",
        rate(u_secs)
    );
    println!(
        "time-ordered file: {:>9.0} events/s ({t_secs:.2}s)",
        rate(t_secs)
    );
    println!(
        "redelivered file:  {:>9.0} events/s ({again_secs:.2}s, every event a duplicate)",
        rate(again_secs)
    );
    println!(
        "time-ordered / user-ordered: {:.2}",
        rate(t_secs) / rate(u_secs)
    );
    Ok(())
}
