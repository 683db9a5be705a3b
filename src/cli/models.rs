//! `churn models`: list, promote and roll back versions.

use anyhow::{Context, Result};
use clap::Subcommand;

use super::JsonFlag;
use super::output::{print_json, print_line};
use crate::config::Settings;
use crate::startup::ModelsOnly;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List registered versions with aliases and validation metrics.
    List(JsonFlag),
    /// Point `production` at a version.
    Promote {
        // Its own id: `version` is the propagated `--version` flag's, which
        // clap's debug checks refuse to share.
        #[arg(id = "model_version", value_name = "VERSION")]
        version: u64,
        #[arg(long)]
        json: bool,
    },
    /// Move `production` back to the version it pointed to before.
    Rollback(JsonFlag),
}

pub async fn run(settings: Settings, cmd: ModelsCommand) -> Result<()> {
    let services = ModelsOnly::open(&settings)?;
    match cmd {
        ModelsCommand::List(flag) => {
            let list = services.models.list().await.context("listing models")?;
            if flag.json {
                return print_json(&list);
            }
            if list.is_empty() {
                print_line("no models registered yet: run `churn train`")?;
            }
            for m in list {
                print_line(&format!(
                    "v{:<4} {:<20} auc {:.4} (recency {:.4})  trained {}  {}",
                    m.version,
                    m.aliases.join(","),
                    m.metadata.metrics.auc,
                    m.metadata.metrics.recency_auc,
                    m.metadata.trained_at,
                    m.metadata.kind.as_str()
                ))?;
            }
            Ok(())
        }
        ModelsCommand::Promote { version, json } => {
            let record = services
                .models
                .promote(version, "promoted by hand (CLI)")
                .await
                .with_context(|| format!("promoting version {version}"))?;
            if json {
                return print_json(&record);
            }
            print_line(&format!("production -> version {}", record.version))?;
            Ok(())
        }
        ModelsCommand::Rollback(flag) => {
            let record = services.models.rollback().await.context("rolling back")?;
            if flag.json {
                return print_json(&record);
            }
            print_line(&format!(
                "production -> version {} ({})",
                record.version, record.reason
            ))?;
            Ok(())
        }
    }
}
