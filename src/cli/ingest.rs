//! `churn ingest`: an NDJSON file (or stdin) through the ingestion pipeline.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::output::{print_json, print_line, spinner};
use crate::application::ingest::{IngestReport, RejectReason, TallyRejects};
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
    let mut tally = TallyRejects::new(&mut rejects);
    let bar = spinner("ingesting");
    let started = std::time::Instant::now();
    let report = services
        .ingest
        .run(&mut source, &mut tally, |r| {
            bar.set_message(format!(
                "ingesting: {} read, {} stored, {} rejected",
                r.read, r.inserted, r.rejected
            ));
        })
        .await;
    bar.finish_and_clear();
    let report = report.context("ingesting events")?;
    let reasons = tally.reasons();
    let secs = started.elapsed().as_secs_f64();
    // Nothing usable at all is a failure, not a count: a script must not
    // go on to train on an empty store.
    let all_rejected = report.read > 0 && report.rejected == report.read;
    if args.json {
        print_json(&serde_json::json!({
            "read": report.read,
            "inserted": report.inserted,
            "duplicates": report.duplicates,
            "rejected": report.rejected,
            "rejected_by_field": reasons,
            "rejects_file": (report.rejected > 0).then(|| rejects_path.display().to_string()),
            "seconds": secs,
        }))?;
    } else {
        print_summary(&report, &reasons, &rejects_path, secs)?;
    }
    if all_rejected {
        bail!(
            "every one of the {} lines was rejected (reasons above; lines in {})",
            report.read,
            rejects_path.display()
        );
    }
    Ok(())
}

fn print_summary(
    report: &IngestReport,
    reasons: &[RejectReason],
    rejects_path: &std::path::Path,
    secs: f64,
) -> Result<()> {
    print_line(&format!(
        "read {} lines: {} stored, {} duplicates skipped, {} rejected ({:.0} events/s)",
        report.read,
        report.inserted,
        report.duplicates,
        report.rejected,
        report.read as f64 / secs.max(1e-9)
    ))?;
    for r in reasons.iter().take(5) {
        print_line(&format!(
            "  {:>10} rejected for {}, e.g. {}",
            r.count, r.field, r.example
        ))?;
    }
    if report.rejected > 0 {
        print_line(&format!(
            "rejected lines and reasons: {}",
            rejects_path.display()
        ))?;
    }
    Ok(())
}
