//! `churn forget USER…`: erase users (events, feature rows, scores, names,
//! model versions' drift samples) from the configured store and registry.
//! A running server still holds them in memory until its next rebuild:
//! erase through `DELETE /admin/users/{id}` there.

use anyhow::{Context, Result};
use clap::Args;

use super::output::{print_json, print_line};
use crate::config::Settings;
use crate::domain::user::UserId;
use crate::startup::Services;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// User ids as sent at ingestion (integers or strings).
    #[arg(required = true)]
    pub users: Vec<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: Settings, args: ForgetArgs) -> Result<()> {
    let users = args
        .users
        .iter()
        .map(|u| UserId::parse(u).with_context(|| format!("user id {u:?}")))
        .collect::<Result<Vec<_>>>()?;
    let services = Services::build(settings).await?;
    let report = services
        .forget
        .forget(&users)
        .await
        .context("erasing users")?;
    if args.json {
        return print_json(&report);
    }
    print_line(&format!(
        "erased {} users: {} events, {} feature rows, {} scores, {} names; {} model versions' drift samples rewritten",
        report.users.len(),
        report.rows.events,
        report.rows.feature_rows,
        report.rows.predictions,
        report.rows.names,
        report.model_versions
    ))
}
