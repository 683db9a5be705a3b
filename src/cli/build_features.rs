//! `churn build-features`: one feature snapshot as of a time.

use anyhow::{Context, Result};
use clap::Args;

use super::output::{parse_time_arg, print_json, print_line, spinner};
use crate::application::build_features::AsOf;
use crate::config::Settings;
use crate::domain::time::format_rfc3339;
use crate::startup::Stores;

#[derive(Debug, Args)]
pub struct BuildFeaturesArgs {
    /// Compute features as of this time: `auto` (the default: the newest
    /// stored event when it is more than a week old, a historic log; else
    /// now), `now`, `end` (the newest stored event), or a date/timestamp.
    #[arg(long, default_value = "auto")]
    pub as_of: String,
    #[arg(long)]
    pub json: bool,
}

/// Parses `auto`, `now`, `end` or a time.
///
/// # Errors
/// Anything else.
pub fn parse_as_of(value: &str) -> Result<AsOf> {
    Ok(match value.trim() {
        "now" => AsOf::Now,
        "end" => AsOf::EndOfData,
        "auto" => AsOf::Auto,
        v => AsOf::At(parse_time_arg("--as-of", v)?),
    })
}

pub async fn run(settings: Settings, args: BuildFeaturesArgs) -> Result<()> {
    let as_of = parse_as_of(&args.as_of)?;
    let stores = Stores::open(&settings).await?;
    let spec = std::sync::Arc::new(crate::startup::load_spec(&settings)?);
    let bar = spinner("building features");
    let report = stores.build_features(spec).run(as_of).await;
    bar.finish_and_clear();
    let report = report.context("building features")?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if args.json {
        return print_json(&report);
    }
    let s = &report.summary;
    print_line(&format!(
        "feature snapshot as of {}: {} users x {} features",
        format_rfc3339(s.as_of),
        s.users,
        s.features
    ))
}
