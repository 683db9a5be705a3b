//! `churn backup DIR` and `churn restore DIR`: the embedded store and the
//! local registry, copied consistently while a server serves and ingests
//! (`infrastructure::backup`), and put back into a data directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::output::{print_json, print_line};
use crate::config::{Settings, StoreKind};
use crate::infrastructure::backup::{self, Manifest};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A new (or empty) directory to write the backup into.
    pub dir: PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A directory written by `churn backup`.
    pub dir: PathBuf,
    /// Replace an existing store (stop every server using it first).
    #[arg(long)]
    pub overwrite: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// The embedded store's file and the local registry directory (`None` for
/// an S3 registry, which has its own versioning).
fn targets(settings: &Settings) -> Result<(PathBuf, Option<PathBuf>)> {
    if settings.store.kind != StoreKind::Sqlite {
        bail!(
            "churn backup covers the embedded store; back ClickHouse up with its own tools \
             (ALTER TABLE … FREEZE, clickhouse-backup) and the registry with S3 versioning"
        );
    }
    let registry = (!settings.registry.url.starts_with("s3://")).then(|| settings.registry_dir());
    Ok((settings.sqlite_path(), registry))
}

fn report(what: &str, manifest: &Manifest, json: bool) -> Result<()> {
    if json {
        return print_json(manifest);
    }
    print_line(&format!(
        "{what}: {} events, {} model versions (production: {})",
        manifest.events,
        manifest.versions,
        manifest
            .production
            .map_or_else(|| "none".to_string(), |v| v.to_string())
    ))
}

pub async fn backup(settings: Settings, args: BackupArgs) -> Result<()> {
    let (db, registry) = targets(&settings)?;
    let dir = args.dir.clone();
    let manifest =
        tokio::task::spawn_blocking(move || backup::backup(&db, registry.as_deref(), &dir))
            .await
            .context("backup task")?
            .with_context(|| format!("backing up into {}", args.dir.display()))?;
    report(
        &format!("backed up into {}", args.dir.display()),
        &manifest,
        args.json,
    )
}

pub async fn restore(settings: Settings, args: RestoreArgs) -> Result<()> {
    let (db, registry) = targets(&settings)?;
    let dir = args.dir.clone();
    let overwrite = args.overwrite;
    let manifest = tokio::task::spawn_blocking(move || {
        backup::restore(&dir, &db, registry.as_deref(), overwrite)
    })
    .await
    .context("restore task")?
    .with_context(|| format!("restoring from {}", args.dir.display()))?;
    report(
        &format!(
            "restored {} (taken {})",
            args.dir.display(),
            manifest.created_at
        ),
        &manifest,
        args.json,
    )
}
