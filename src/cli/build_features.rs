//! `churn build-features`: one feature snapshot as of a time.

use anyhow::{Context, Result};
use clap::Args;

use super::output::{parse_time_arg, print_json, print_line, spinner};
use crate::config::Settings;
use crate::domain::time::format_rfc3339;
use crate::startup::Services;

#[derive(Debug, Args)]
pub struct BuildFeaturesArgs {
    /// Compute features as of this time (default: now).
    #[arg(long)]
    pub as_of: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: Settings, args: BuildFeaturesArgs) -> Result<()> {
    let services = Services::build(settings).await?;
    let as_of = args
        .as_of
        .as_deref()
        .map(|v| parse_time_arg("--as-of", v))
        .transpose()?;
    let bar = spinner("building features");
    let summary = services.build_features.run(as_of).await;
    bar.finish_and_clear();
    let summary = summary.context("building features")?;
    if args.json {
        return print_json(&summary);
    }
    print_line(&format!(
        "feature snapshot as of {}: {} users x {} features",
        format_rfc3339(summary.as_of),
        summary.users,
        summary.features
    ))
}
