//! `churn ingest`: an NDJSON or CSV file (or stdin) through the ingestion
//! pipeline, read in the shape `[ingest]` declares (field mapping, time
//! format and zone).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use super::output::{print_json, print_line, spinner};
use crate::application::ingest::{IngestReport, RejectReason, SourceKind, TallyRejects};
use crate::config::Settings;
use crate::startup::{FileFormat, Stores};

/// The input's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated with a header row (`ingest.csv_delimiter`).
    Csv,
    /// Tab-separated with a header row.
    Tsv,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// NDJSON or CSV file, or `-` for stdin.
    pub file: PathBuf,
    /// Input format (default: from the extension — .csv, .tsv — else NDJSON).
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Where rejected lines go (default: `ingest.rejects_file`).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The format of `path`: the flag, else its extension.
fn input_format(path: &Path, flag: Option<InputFormat>) -> FileFormat {
    match flag {
        None => FileFormat::of(path),
        Some(InputFormat::Ndjson) => FileFormat::Ndjson,
        Some(InputFormat::Csv) => FileFormat::Csv,
        Some(InputFormat::Tsv) => FileFormat::Tsv,
    }
}

/// What ingesting one file did.
pub(super) struct IngestRun {
    pub report: IngestReport,
    pub reasons: Vec<RejectReason>,
    pub rejects_path: PathBuf,
    pub sampled: u64,
    pub secs: f64,
}

/// One file (or stdin) through the pipeline into `stores`, rejects to the
/// rejects file; fails when every line was refused.
pub(super) async fn ingest_file(
    settings: &Settings,
    stores: &Stores,
    file: &Path,
    format: Option<InputFormat>,
    rejects: Option<PathBuf>,
) -> Result<IngestRun> {
    let ingest = stores.ingest(settings)?;
    let format = input_format(file, format);
    let mut source = crate::startup::event_source(settings, file, format)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let kind = if file.as_os_str() == "-" {
        SourceKind::Stdin
    } else {
        SourceKind::File
    };
    let rejects_path = rejects.unwrap_or_else(|| settings.rejects_path());
    let mut rejects = crate::startup::rejects_file(settings, rejects_path.clone());
    let bar = spinner("ingesting");
    let started = std::time::Instant::now();
    let (report, reasons) = {
        let mut tally = TallyRejects::new(&mut rejects);
        let report = ingest
            .run(&mut *source, kind, &mut tally, |r: &IngestReport| {
                bar.set_message(format!(
                    "ingesting: {} read, {} stored, {} rejected",
                    r.read, r.inserted, r.rejected
                ));
            })
            .await;
        (report, tally.reasons())
    };
    bar.finish_and_clear();
    rejects
        .finish(kind.as_str())
        .await
        .context("writing the rejects file")?;
    let report = report.context("ingesting events")?;
    Ok(IngestRun {
        report,
        reasons,
        rejects_path,
        sampled: rejects.sampled(),
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Nothing usable at all is a failure, not a count: a script must not go
/// on to train on an empty store.
pub(super) fn fail_if_all_rejected(run: &IngestRun) -> Result<()> {
    let r = &run.report;
    if r.read > 0 && r.rejected == r.read {
        bail!(
            "every one of the {} lines was rejected (reasons above; examples in {}); \
             if the fields have other names or times another form, map them in [ingest] \
             (fields, preset, time_format, timezone)",
            r.read,
            run.rejects_path.display()
        );
    }
    Ok(())
}

pub async fn run(settings: Settings, args: IngestArgs) -> Result<()> {
    let stores = Stores::open(&settings).await?;
    let run = ingest_file(&settings, &stores, &args.file, args.format, args.rejects).await?;
    if args.json {
        print_json(&serde_json::json!({
            "read": run.report.read,
            "inserted": run.report.inserted,
            "duplicates": run.report.duplicates,
            "rejected": run.report.rejected,
            "rejected_by_field": run.reasons,
            "rejects_file": (run.report.rejected > 0).then(|| run.rejects_path.display().to_string()),
            "rejects_sampled": run.sampled,
            "seconds": run.secs,
        }))?;
    } else {
        print_summary(
            &run.report,
            &run.reasons,
            &run.rejects_path,
            run.sampled,
            run.secs,
        )?;
    }
    fail_if_all_rejected(&run)
}

pub(super) fn print_summary(
    report: &IngestReport,
    reasons: &[RejectReason],
    rejects_path: &Path,
    sampled: u64,
    secs: f64,
) -> Result<()> {
    print_line(&format!(
        "read {} lines: {} stored, {} redelivered (already stored), {} rejected ({:.0} events/s)",
        report.read,
        report.inserted,
        report.duplicates,
        report.rejected,
        report.read as f64 / secs.max(1e-9)
    ))?;
    for r in reasons.iter().take(5) {
        print_line(&format!(
            "  {:>10} rejected for {}, e.g. {}\n             line: {}",
            r.count, r.field, r.example, r.line
        ))?;
    }
    if report.rejected > 0 {
        print_line(&format!(
            "rejected lines: {sampled} examples and the counts in {}",
            rejects_path.display()
        ))?;
    }
    Ok(())
}
