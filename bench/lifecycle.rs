//! Lifecycle benchmark on the embedded default: generate ~1M events, then
//! time ingestion, the feature build and training, and print validation AUC
//! for both models next to the recency rule.
//!
//! `cargo bench --bench lifecycle` (env `BENCH_USERS`, default 4800 users
//! ≈ 1M events). Prints figures; asserts nothing about speed.

use std::time::Instant;

use churn::application::generate::{GeneratorOptions, generate};
use churn::application::ingest::{CollectRejects, Delivery, SourceKind};
use churn::application::ports::RawRecord;
use churn::config::Settings;
use churn::domain::sampling::RowSample;
use churn::startup::Services;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users: u64 = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_800);
    let dir = tempfile::tempdir()?;
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    let services = Services::build(settings).await?;

    let end = 1_780_000_000; // fixed so runs are comparable
    let t = Instant::now();
    let mut events = Vec::new();
    generate(
        GeneratorOptions {
            users,
            days: 120,
            end,
            seed: 11,
            churn_share: 0.35,
            string_ids: false,
        },
        |e| events.push(e),
    );
    let n = events.len();
    println!(
        "generated {n} events for {users} users in {:.2}s",
        t.elapsed().as_secs_f64()
    );

    // Ingest from NDJSON bytes: parse + validate + idempotent append, the
    // same path as `churn ingest` and `POST /events`.
    let mut records: Vec<RawRecord> = events
        .iter()
        .enumerate()
        .map(|(i, e)| RawRecord::new(e.to_json().to_string().into_bytes(), i.to_string()))
        .collect();
    drop(events);
    let batch = services.settings.ingest.batch_size;
    let t = Instant::now();
    let mut inserted = 0;
    let mut delivery = Delivery::new(SourceKind::File);
    let mut rejects = CollectRejects::new(10);
    while !records.is_empty() {
        let chunk: Vec<_> = records.drain(..batch.min(records.len())).collect();
        inserted += services
            .ingest
            .process(chunk, &mut delivery, &mut rejects)
            .await?
            .inserted;
    }
    let ingest_secs = t.elapsed().as_secs_f64();
    println!(
        "ingest:          {inserted} events in {ingest_secs:.2}s = {:.0} events/s (NDJSON parse + validate + append, batches of {batch})",
        inserted as f64 / ingest_secs
    );

    let t = Instant::now();
    let summary = services
        .build_features
        .run(churn::application::build_features::AsOf::At(end))
        .await?
        .summary;
    println!(
        "feature build:   {} users x {} features in {:.2}s",
        summary.users,
        summary.features,
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let plan = services.train.plan_cutoffs().await?;
    let cutoffs = plan.train_cutoffs;
    let policy = churn::startup::label_policy(&services.settings);
    for c in cutoffs.iter().chain([&plan.validation_cutoff]) {
        services
            .features
            .training_set(&services.spec, &policy, *c, RowSample::ALL)
            .await?;
    }
    let sets_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = services.train.run().await?;
    let total = t.elapsed().as_secs_f64();
    println!(
        "training sets:   {} point-in-time sets (features + labels) in {sets_secs:.2}s",
        cutoffs.len() + 1
    );
    println!(
        "training:        {:.2}s total ({:.2}s GBDT fit) on {} rows, validated on {} rows ({} held out for the figures)",
        total, report.training_secs, report.train_rows, report.validation_rows, report.report_rows
    );
    println!(
        "validation AUC:  gbdt {:.4} | logistic {:.4} | recency rule {:.4}",
        report.gbdt_metrics.auc, report.baseline_metrics.auc, report.metrics.recency_auc
    );
    println!(
        "registered:      {} auc {:.4} pr_auc {:.4} logloss {:.4} brier {:.4}",
        report.model_kind.as_str(),
        report.metrics.auc,
        report.metrics.pr_auc,
        report.metrics.logloss,
        report.metrics.brier
    );
    for w in &report.warnings {
        println!("warning:         {w}");
    }
    Ok(())
}
