//! `churn ingest`: an NDJSON file (or stdin) through the ingestion pipeline.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::output::{print_json, print_line, spinner};
use crate::config::Settings;
use crate::startup::Services;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// NDJSON file, or `-` for stdin.
    pub file: PathBuf,
    /// Where rejected lines go (default: `ingest.rejects_file`).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: Settings, args: IngestArgs) -> Result<()> {
    let services = Services::build(settings).await?;
    let mut source = crate::startup::ndjson_source(&args.file).await?;
    let rejects_path = args
        .rejects
        .unwrap_or_else(|| services.settings.rejects_path());
    let mut rejects = crate::startup::rejects_file(rejects_path.clone());
    let bar = spinner("ingesting");
    let started = std::time::Instant::now();
    let report = services
        .ingest
        .run(&mut source, &mut rejects, |r| {
            bar.set_message(format!(
                "ingesting: {} read, {} stored, {} rejected",
                r.read, r.inserted, r.rejected
            ));
        })
        .await;
    bar.finish_and_clear();
    let report = report.context("ingesting events")?;
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        return print_json(&serde_json::json!({
            "read": report.read,
            "inserted": report.inserted,
            "duplicates": report.duplicates,
            "rejected": report.rejected,
            "rejects_file": (report.rejected > 0).then(|| rejects_path.display().to_string()),
            "seconds": secs,
        }));
    }
    print_line(&format!(
        "read {} lines: {} stored, {} duplicates skipped, {} rejected ({:.0} events/s)",
        report.read,
        report.inserted,
        report.duplicates,
        report.rejected,
        report.read as f64 / secs.max(1e-9)
    ))?;
    if report.rejected > 0 {
        print_line(&format!(
            "rejected lines and reasons: {}",
            rejects_path.display()
        ))?;
    }
    Ok(())
}
