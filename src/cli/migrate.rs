//! `churn migrate`: apply pending ClickHouse migrations.

use anyhow::{Context, Result, bail};

use super::JsonFlag;
use super::output::{print_json, print_line};
use crate::config::{Settings, StoreKind};

pub async fn run(mut settings: Settings, flag: JsonFlag) -> Result<()> {
    if settings.store.kind != StoreKind::Clickhouse {
        bail!(
            "churn migrate applies ClickHouse migrations: set store.type = \"clickhouse\" (CHURN_STORE__TYPE=clickhouse)"
        );
    }
    settings.clickhouse.migrate_on_start = false;
    let store = crate::startup::open_clickhouse(&settings).await?;
    let report = store.migrate().await.context("applying migrations")?;
    if flag.json {
        return print_json(&report);
    }
    for m in &report.applied {
        print_line(&format!("applied {m}"))?;
    }
    print_line(&format!(
        "{} applied, {} already applied, database {}",
        report.applied.len(),
        report.already_applied.len(),
        store.database()
    ))
}
