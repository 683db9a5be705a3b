//! Backup and restore of the embedded state: the SQLite store and the
//! local model registry, consistent while a server serves and ingests.
//!
//! - The store is copied with SQLite's online backup API in a single step:
//!   one read transaction, so the copy is the database as of one instant
//!   even while another process writes (WAL readers never block writers,
//!   and a one-step backup is never restarted by their writes).
//! - The registry is copied aliases first, then versions: versions are
//!   immutable and written before any alias names them, so every version
//!   an alias in the backup names is in the backup too.
//! - `manifest.json` records what was copied (event count, versions, the
//!   production version); a restore checks the copy against it.
//!
//! ClickHouse and S3 have their own tools (ClickHouse `FREEZE`/backups,
//! S3 versioning); a backup of those is refused with that advice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub created_at: String,
    pub churn_version: String,
    /// Events in the copied store.
    pub events: u64,
    /// Model versions in the copied registry (0 without one).
    pub versions: usize,
    /// The version `production` named in the copy.
    pub production: Option<u64>,
}

const STORE_FILE: &str = "churn.db";
const REGISTRY_DIR: &str = "registry";
const MANIFEST: &str = "manifest.json";

/// Copies the store at `db` and the registry at `registry` (if any) into
/// `dir`, which must be absent or empty.
///
/// # Errors
/// A non-empty `dir`, an unreadable store, a failed copy.
pub fn backup(db: &Path, registry: Option<&Path>, dir: &Path) -> Result<Manifest, BackupError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(BackupError::Refused(format!(
            "{} is not empty: back up into a new directory",
            dir.display()
        )));
    }
    if !db.exists() {
        return Err(BackupError::Refused(format!(
            "no store at {} (store.sqlite_path, data_dir)",
            db.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let target = dir.join(STORE_FILE);
    let events = copy_store(db, &target)?;
    let (versions, production) = match registry {
        Some(r) if r.exists() => copy_registry(r, &dir.join(REGISTRY_DIR))?,
        _ => (0, None),
    };
    let manifest = Manifest {
        created_at: chrono::Utc::now().to_rfc3339(),
        churn_version: env!("CARGO_PKG_VERSION").to_string(),
        events,
        versions,
        production,
    };
    write_manifest(dir, &manifest)?;
    Ok(manifest)
}

/// Restores the backup in `dir` into the store at `db` and the registry at
/// `registry`. Refuses to replace an existing store unless `overwrite`
/// (stop every server using it first).
///
/// # Errors
/// No backup in `dir`, an existing target, a copy that does not match its
/// manifest.
pub fn restore(
    dir: &Path,
    db: &Path,
    registry: Option<&Path>,
    overwrite: bool,
) -> Result<Manifest, BackupError> {
    let manifest_path = dir.join(MANIFEST);
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).map_err(io(&manifest_path))?)
            .map_err(|e| BackupError::Refused(format!("{}: {e}", manifest_path.display())))?;
    if db.exists() && !overwrite {
        return Err(BackupError::Refused(format!(
            "{} exists: restore into a fresh data_dir, or pass --overwrite with every server on it stopped",
            db.display()
        )));
    }
    let source = dir.join(STORE_FILE);
    let events = count_events(&Connection::open_with_flags(
        &source,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)?;
    if events != manifest.events {
        return Err(BackupError::Refused(format!(
            "{} holds {events} events, its manifest says {}: the backup is damaged",
            source.display(),
            manifest.events
        )));
    }
    if let Some(parent) = db.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // Into a temporary file beside the target, then renamed: a restore cut
    // short leaves the old store (or none), never half a file.
    let partial = db.with_extension("db.restoring");
    std::fs::copy(&source, &partial).map_err(io(&partial))?;
    for stale in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(db.with_extension(stale));
    }
    std::fs::rename(&partial, db).map_err(io(db))?;
    if let Some(registry) = registry {
        let from = dir.join(REGISTRY_DIR);
        if from.exists() {
            copy_tree(&from, registry)?;
        }
    }
    Ok(manifest)
}

fn count_events(conn: &Connection) -> Result<u64, BackupError> {
    Ok(
        conn.query_row("SELECT events FROM event_stats WHERE id = 0", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

/// One-step online backup of `db` into `target`; the copy's event count.
fn copy_store(db: &Path, target: &Path) -> Result<u64, BackupError> {
    let source = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    source.busy_timeout(Duration::from_secs(10))?;
    let mut copy = Connection::open(target)?;
    {
        let backup = Backup::new(&source, &mut copy)?;
        // -1: every page in one step, under one read lock. A busy or
        // locked source (a writer checkpointing) is waited for, bounded.
        let mut waits = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    waits += 1;
                    if waits > 600 {
                        return Err(BackupError::Refused(format!(
                            "{} stayed locked for a minute",
                            db.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {}
            }
        }
    }
    let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(BackupError::Refused(format!(
            "the copy of {} failed its check: {check}",
            db.display()
        )));
    }
    count_events(&copy)
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(io(&d))? {
            let path = entry.map_err(io(&d))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                out.push(relative.to_path_buf());
            }
        }
    }
    Ok(out)
}

fn copy_file(from: &Path, to: &Path) -> Result<(), BackupError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::copy(from, to).map_err(io(from))?;
    Ok(())
}

/// Copies a registry: aliases first (module doc), lock files never.
fn copy_registry(from: &Path, to: &Path) -> Result<(usize, Option<u64>), BackupError> {
    let mut all = files(from)?;
    all.retain(|p| p.extension().is_none_or(|e| e != "lock"));
    let is_alias = |p: &PathBuf| p.components().any(|c| c.as_os_str() == "aliases");
    all.sort_by_key(|p| !is_alias(p));
    let mut production = None;
    let mut versions = 0;
    for relative in &all {
        copy_file(&from.join(relative), &to.join(relative))?;
        if is_alias(relative) && relative.ends_with("production.json") {
            production = std::fs::read(to.join(relative))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["version"].as_u64());
        }
        if relative.ends_with("metadata.json") {
            versions += 1;
        }
    }
    Ok((versions, production))
}

/// Copies every file of `from` into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    for relative in files(from)? {
        copy_file(&from.join(&relative), &to.join(&relative))?;
    }
    Ok(())
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let path = dir.join(MANIFEST);
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| BackupError::Refused(format!("manifest: {e}")))?;
    std::fs::write(&path, json).map_err(io(&path))
}
