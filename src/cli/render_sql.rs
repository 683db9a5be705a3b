//! `churn render-sql`: the ClickHouse SQL generated from the feature spec.

use anyhow::Result;
use clap::Args;

use super::output::{parse_time_arg, print_json};
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct RenderSqlArgs {
    /// Database name to render (default: `clickhouse.database`).
    #[arg(long)]
    pub database: Option<String>,
    /// Snapshot time.
    #[arg(long)]
    pub as_of: String,
    /// Training-set cutoff (default: the snapshot time).
    #[arg(long)]
    pub cutoff: Option<String>,
}

pub fn run(settings: &Settings, args: RenderSqlArgs) -> Result<()> {
    let db = args
        .database
        .unwrap_or_else(|| settings.clickhouse.database.clone());
    let as_of = parse_time_arg("--as-of", &args.as_of)?;
    let cutoff = match &args.cutoff {
        Some(c) => parse_time_arg("--cutoff", c)?,
        None => as_of,
    };
    print_json(&crate::startup::render_clickhouse_sql(
        settings, &db, as_of, cutoff,
    )?)
}
