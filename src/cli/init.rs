//! `churn init FILE`: from a raw log to a trained model and a written
//! configuration in one command — ingest, profile, settings chosen from the
//! data (horizon and lookback from how often users return, the rebuild
//! rule from how old the log is), a feature spec for its types without
//! repeated columns, a commented config, training, a snapshot to serve,
//! and a short report of what was chosen and why.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use super::features::{suggested_spec, write_spec};
use super::ingest::{InputFormat, fail_if_all_rejected, ingest_file, print_summary};
use super::output::{print_json, print_line};
use crate::application::build_features::AsOf;
use crate::config::{FeaturesAsOf, Settings};
use crate::domain::recommend::Recommendation;
use crate::domain::time::{DAY_SECS, floor_day, format_rfc3339};
use crate::startup::{Services, Stores};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The log: NDJSON, CSV or TSV (as `churn ingest` reads it, with the
    /// `[ingest]` mapping of the configuration in use).
    pub file: PathBuf,
    /// Input format (default: from the extension).
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Where the chosen configuration is written.
    #[arg(long, default_value = "churn.toml")]
    pub config_out: PathBuf,
    /// Where the suggested feature spec is written.
    #[arg(long, default_value = "features.toml")]
    pub spec_out: PathBuf,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// What `init` chose and measured.
#[derive(Debug, Serialize)]
struct InitReport {
    events: u64,
    users: u64,
    first_event: Option<String>,
    last_event: Option<String>,
    recommended: Recommendation,
    features: usize,
    features_left_out: Vec<String>,
    config: String,
    spec: String,
    train: serde_json::Value,
    snapshot_as_of: String,
    next: Vec<String>,
}

pub async fn run(settings: Settings, args: InitArgs) -> Result<()> {
    for out in [&args.config_out, &args.spec_out] {
        if out.exists() && !args.force {
            bail!("{} exists: pass --force to replace it", out.display());
        }
    }
    // 1. The log into the store.
    let stores = Stores::open(&settings).await?;
    let ingested = ingest_file(&settings, &stores, &args.file, args.format, None).await?;
    if !args.json {
        print_summary(
            &ingested.report,
            &ingested.reasons,
            &ingested.rejects_path,
            ingested.sampled,
            ingested.secs,
        )?;
    }
    fail_if_all_rejected(&ingested)?;

    // 2. Its shape, and the settings it calls for.
    let profile = stores
        .profile(&settings)?
        .run()
        .await
        .context("profiling the log")?;
    let recommended = profile
        .recommended
        .clone()
        .context("the store is empty after ingesting: nothing to profile")?;
    let mut chosen = settings.clone();
    chosen.training.horizon_days = recommended.horizon_days;
    chosen.training.lookback_days = recommended.lookback_days;
    chosen.schedule.features_as_of = FeaturesAsOf::Auto;

    // 3. A spec for its types, compared at the validation cutoff.
    let stats = stores.events.stats().await?;
    let last = stats.last_event_time.unwrap_or_default();
    let cutoff = floor_day(last) - i64::from(recommended.horizon_days) * DAY_SECS;
    let suggested = suggested_spec(&stores, Some(cutoff)).await?;
    write_spec(&suggested, &args.spec_out)?;
    chosen.features.spec_file = args.spec_out.display().to_string();

    // 4. The configuration, commented.
    std::fs::write(
        &args.config_out,
        config_text(&chosen, &recommended, &args, &profile_line(&stats)),
    )
    .with_context(|| format!("writing {}", args.config_out.display()))?;

    // 5. Train with it, and build the snapshot serving will use.
    let services = Services::build(chosen).await?;
    let trained = services.train.run().await.context("training")?;
    let snapshot = services
        .build_features
        .run(AsOf::Auto)
        .await
        .context("building features")?;
    let config = args.config_out.display().to_string();
    let report = InitReport {
        events: stats.events,
        users: stats.users,
        first_event: stats.first_event_time.map(format_rfc3339),
        last_event: stats.last_event_time.map(format_rfc3339),
        features: suggested.spec.len(),
        features_left_out: suggested
            .dropped
            .iter()
            .map(|d| d.feature.clone())
            .collect(),
        recommended,
        config: config.clone(),
        spec: args.spec_out.display().to_string(),
        train: serde_json::to_value(&trained)?,
        snapshot_as_of: format_rfc3339(snapshot.summary.as_of),
        next: vec![
            format!("churn --config {config} serve"),
            format!("churn --config {config} score --out scores.csv --reasons 3"),
            format!("churn --config {config} profile"),
        ],
    };
    if args.json {
        return print_json(&report);
    }
    let m = &trained.metrics;
    let mut lines = vec![format!(
        "{} events from {} users, {} to {}",
        report.events,
        report.users,
        report.first_event.as_deref().unwrap_or("-"),
        report.last_event.as_deref().unwrap_or("-")
    )];
    lines.push("chosen from the data:".into());
    lines.extend(report.recommended.reasons.iter().map(|r| format!("  {r}")));
    lines.push(format!("  {}", suggested.summary(&args.spec_out)));
    lines.push(format!(
        "trained version {} ({}): validation AUC {:.4} on users the choice never saw, recency rule {:.4}; {}",
        trained.version,
        trained.model_kind.as_str(),
        m.auc,
        m.recency_auc,
        trained.decision
    ));
    for w in &trained.warnings {
        lines.push(format!("warning: {w}"));
    }
    lines.push(format!(
        "wrote {} and {}; features as of {} are ready to serve",
        report.config, report.spec, report.snapshot_as_of
    ));
    lines.push("next:".into());
    lines.extend(report.next.iter().map(|n| format!("  {n}")));
    print_line(&lines.join("\n"))
}

fn profile_line(stats: &crate::application::ports::EventStats) -> String {
    format!(
        "{} events from {} users, {} to {}",
        stats.events,
        stats.users,
        stats
            .first_event_time
            .map(format_rfc3339)
            .unwrap_or_default(),
        stats
            .last_event_time
            .map(format_rfc3339)
            .unwrap_or_default()
    )
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The configuration `init` writes: what it chose, each with its reason,
/// and the `[ingest]` mapping the log was read with.
fn config_text(s: &Settings, r: &Recommendation, args: &InitArgs, shape: &str) -> String {
    let comment = |text: &str| -> String {
        text.lines()
            .map(|l| format!("# {}\n", l.trim_start()))
            .collect()
    };
    let mut out = format!(
        "# Written by `churn init {}` on {}.\n# The log: {shape}.\n\
         # Every key is documented in churn's config.toml; CHURN_* variables override them.\n\n",
        args.file.display(),
        chrono::Utc::now().format("%Y-%m-%d"),
    );
    out.push_str(&format!(
        "data_dir = {}\n\n",
        quoted(&s.data_dir.display().to_string())
    ));
    out.push_str("[training]\n");
    out.push_str(&comment(
        r.reasons
            .iter()
            .find(|x| x.contains("horizon"))
            .map_or("", |x| x),
    ));
    out.push_str(&format!("horizon_days = {}\n", r.horizon_days));
    out.push_str(&comment(
        r.reasons
            .iter()
            .find(|x| x.contains("lookback"))
            .map_or("", |x| x),
    ));
    out.push_str(&format!("lookback_days = {}\n\n", r.lookback_days));
    out.push_str("[schedule]\n");
    out.push_str(&comment(
        r.reasons
            .iter()
            .find(|x| x.contains("features_as_of"))
            .map_or("", |x| x),
    ));
    out.push_str(&format!(
        "features_as_of = {}\n\n",
        quoted(r.features_as_of)
    ));
    out.push_str(
        "[features]\n# The spec written for this log's event types (churn features suggest).\n",
    );
    out.push_str(&format!("spec_file = {}\n", quoted(&s.features.spec_file)));
    let i = &s.ingest;
    let defaults = crate::config::IngestSettings::default();
    let mut ingest = String::new();
    if i.preset != defaults.preset {
        ingest.push_str(&format!("preset = {}\n", quoted(&i.preset)));
    }
    if i.time_format != defaults.time_format {
        ingest.push_str(&format!("time_format = {}\n", quoted(&i.time_format)));
    }
    if i.timezone != defaults.timezone {
        ingest.push_str(&format!("timezone = {}\n", quoted(&i.timezone)));
    }
    if i.default_event_type != defaults.default_event_type {
        ingest.push_str(&format!(
            "default_event_type = {}\n",
            quoted(&i.default_event_type)
        ));
    }
    if i.csv_delimiter != defaults.csv_delimiter {
        ingest.push_str(&format!("csv_delimiter = {}\n", quoted(&i.csv_delimiter)));
    }
    let fields = toml::Value::try_from(&i.fields)
        .ok()
        .and_then(|v| v.as_table().cloned())
        .unwrap_or_default();
    let fields: Vec<String> = fields
        .iter()
        .filter(|(_, v)| v.as_str() != Some(""))
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    if !ingest.is_empty() || !fields.is_empty() {
        out.push_str("\n[ingest]\n# How this log was read; later ingests read the same way.\n");
        out.push_str(&ingest);
        if !fields.is_empty() {
            out.push_str("\n[ingest.fields]\n");
            out.push_str(&fields.concat());
        }
    }
    out
}
