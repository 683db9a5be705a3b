//! `churn score`: every eligible user's churn probability, model version
//! and feature time, optionally with the top reasons, to a CSV or NDJSON
//! file (and, in ClickHouse mode, the `churn.predictions` table).
//!
//! CSV is written by hand: every field is a number, an RFC 3339 time or a
//! feature name (identifiers by the spec's rules), except string user ids,
//! which are quoted when they need it (RFC 4180). Parquet is left out: the arrow/parquet crates would add more
//! build time than the rest of the binary, and ClickHouse, DuckDB, pandas
//! and Polars all read these two formats directly.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use super::output::{print_json, print_line};
use crate::application::ports::ScoredUser;
use crate::application::score::ScoreOptions;
use crate::config::Settings;
use crate::startup::Services;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Ndjson,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Output file (`-` = stdout).
    #[arg(long)]
    pub out: PathBuf,
    /// Output format (default: from the file extension, else csv).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Add the top N reasons (feature, value, log-odds contribution).
    #[arg(long, value_name = "N")]
    pub reasons: Option<usize>,
    /// Score with this registered version instead of `production`.
    #[arg(long)]
    pub model_version: Option<u64>,
    /// Every user of the snapshot, not only those eligible under the label
    /// rule (the users the model was trained on).
    #[arg(long)]
    pub all_users: bool,
    /// Print the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
}

fn format_of(args: &ScoreArgs) -> Format {
    args.format
        .unwrap_or_else(|| match args.out.extension().and_then(|e| e.to_str()) {
            Some("ndjson" | "jsonl" | "json") => Format::Ndjson,
            _ => Format::Csv,
        })
}

fn csv_header(reasons: usize) -> String {
    let mut h =
        String::from("user_id,churn_probability,raw_probability,model_version,features_as_of");
    for i in 1..=reasons {
        h.push_str(&format!(
            ",reason_{i},reason_{i}_value,reason_{i}_contribution"
        ));
    }
    h
}

fn csv_line(r: &ScoredUser, reasons: usize) -> String {
    let mut line = format!(
        "{},{},{},{},{}",
        csv_field(&r.user_id.to_string()),
        r.churn_probability,
        r.raw_probability,
        r.model_version,
        r.features_as_of
    );
    for i in 0..reasons {
        match r.reasons.get(i) {
            Some(c) => line.push_str(&format!(",{},{},{}", c.feature, c.value, c.contribution)),
            None => line.push_str(",,,"),
        }
    }
    line
}

/// A CSV field, quoted (with doubled quotes) when it holds a comma, a quote
/// or a line break.
fn csv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([',', '"', '\n', '\r']) {
        std::borrow::Cow::Owned(format!("\"{}\"", text.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

pub async fn run(settings: Settings, args: ScoreArgs) -> Result<()> {
    if args.reasons == Some(0) {
        bail!("--reasons must be at least 1");
    }
    let format = format_of(&args);
    let services = Services::build(settings).await?;
    let sink: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?,
        )
    };
    let mut out = BufWriter::new(sink);
    let reasons = args.reasons.unwrap_or(0);
    if format == Format::Csv {
        writeln!(out, "{}", csv_header(reasons)).context("writing the header")?;
    }
    let options = ScoreOptions {
        reasons: args.reasons,
        version: args.model_version,
        all_users: args.all_users,
    };
    let summary = services
        .score
        .run(options, |rows| {
            for r in rows {
                let line = match format {
                    Format::Csv => csv_line(r, reasons),
                    Format::Ndjson => serde_json::to_string(r).map_err(|e| e.to_string())?,
                };
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await
        .context("scoring")?;
    out.flush().context("writing the scores")?;
    if args.json {
        return print_json(&summary);
    }
    let to = if args.out.as_os_str() == "-" {
        "stdout".to_string()
    } else {
        args.out.display().to_string()
    };
    let table = summary
        .table_rows
        .map(|n| format!("; {n} rows to the predictions table"))
        .unwrap_or_default();
    let left_out = if summary.left_out > 0 && !summary.left_out_reason.is_empty() {
        format!(
            "; {} left out: {}",
            summary.left_out, summary.left_out_reason
        )
    } else {
        String::new()
    };
    let line = format!(
        "scored {} of {} users (eligible at {}) with version {}{} to {to}{table} in {:.2}s{left_out}",
        summary.written,
        summary.snapshot_users,
        summary.features_as_of,
        summary.model_version,
        if summary.calibrated {
            " (calibrated)"
        } else {
            ""
        },
        summary.secs
    );
    if args.out.as_os_str() == "-" {
        eprintln!("{line}");
        Ok(())
    } else {
        print_line(&line)
    }
}
