//! `churn stats`: what the event store holds, and what ingestion refused
//! (running totals per source and field, over every run and driver).

use anyhow::{Context, Result};

use super::JsonFlag;
use super::output::{print_json, print_line};
use crate::config::Settings;
use crate::domain::time::format_rfc3339;
use crate::startup::Stores;

pub async fn run(settings: Settings, flag: JsonFlag) -> Result<()> {
    let stores = Stores::open(&settings).await?;
    let stats = stores.events.stats().await.context("reading store stats")?;
    let rejects = stores
        .events
        .reject_tallies()
        .await
        .context("reading reject counts")?;
    if flag.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            stats: &'a crate::application::ports::EventStats,
            rejected: u64,
            rejected_by_reason: &'a [crate::application::ports::RejectTally],
        }
        return print_json(&Out {
            stats: &stats,
            rejected: rejects.iter().map(|r| r.count).sum(),
            rejected_by_reason: &rejects,
        });
    }
    let time = |t: Option<i64>| t.map(format_rfc3339).unwrap_or_else(|| "-".into());
    let mut lines = vec![format!(
        "{} events from {} users, {} to {}",
        stats.events,
        stats.users,
        time(stats.first_event_time),
        time(stats.last_event_time)
    )];
    if rejects.is_empty() {
        lines.push("rejected: none".into());
    } else {
        let total: u64 = rejects.iter().map(|r| r.count).sum();
        lines.push(format!("rejected: {total} records"));
        for r in &rejects {
            lines.push(format!(
                "  {:>10} {:<9} {:<11} e.g. {}",
                r.count, r.source, r.field, r.example
            ));
        }
    }
    print_line(&lines.join("\n"))
}
