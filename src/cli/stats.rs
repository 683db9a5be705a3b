//! `churn stats`: what the event store holds.

use anyhow::{Context, Result};

use super::JsonFlag;
use super::output::{print_json, print_line};
use crate::config::Settings;
use crate::domain::time::format_rfc3339;
use crate::startup::Services;

pub async fn run(settings: Settings, flag: JsonFlag) -> Result<()> {
    let services = Services::build(settings).await?;
    let stats = services
        .events
        .stats()
        .await
        .context("reading store stats")?;
    if flag.json {
        return print_json(&stats);
    }
    let time = |t: Option<i64>| t.map(format_rfc3339).unwrap_or_else(|| "-".into());
    print_line(&format!(
        "{} events from {} users, {} to {}",
        stats.events,
        stats.users,
        time(stats.first_event_time),
        time(stats.last_event_time)
    ))
}
