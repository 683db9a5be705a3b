//! `SqliteStore`: the embedded event and feature store (the default).
//!
//! - Events live in a `WITHOUT ROWID` table clustered by
//!   `(user_id, event_time, event_id)`: feature builds read each user's
//!   history as one sequential range, and `INSERT OR IGNORE` on the key makes
//!   redelivered events no-ops (see `domain::identity` for the identity).
//! - String user ids: `user_names` keeps each name beside its key.
//! - WAL journal: appends commit atomically and survive a process crash;
//!   readers (feature builds) never block the writer and see a consistent
//!   snapshot.
//! - Features are computed in Rust with the shared [`FeatureSpec`] evaluator
//!   while streaming events in key order, and stored as one `f32` blob per
//!   user per snapshot; a snapshot becomes visible atomically when its header
//!   row commits.
//!
//! rusqlite is synchronous, so every call runs on tokio's blocking pool.
//!
//! Layout, as `store/clickhouse/`: [`events`] (the event port: appends,
//! stats, names, reject counts), [`features`] (the feature port and the
//! per-user scan it evaluates the spec over, [`user_scan`]), [`snapshots`]
//! (stored snapshots), [`training_sets`], [`user_events`] (one user's
//! history, for live features) and [`integrity`] (the check at open).

mod erasure;
mod events;
mod features;
#[cfg(test)]
mod full_disk_tests;
mod integrity;
mod snapshots;
mod training_sets;
mod user_events;
pub mod user_scan;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use crate::application::ports::StoreError;
use integrity::{FileState, quick_check};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    user_id    INTEGER NOT NULL,
    event_time INTEGER NOT NULL,
    event_id   INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    session_id TEXT,
    amount     REAL,
    PRIMARY KEY (user_id, event_time, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_stats (
    id         INTEGER PRIMARY KEY CHECK (id = 0),
    events     INTEGER NOT NULL,
    first_time INTEGER,
    last_time  INTEGER
);
INSERT OR IGNORE INTO event_stats (id, events) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS feature_snapshots (
    as_of         INTEGER PRIMARY KEY,
    created_at    INTEGER NOT NULL,
    fingerprint   TEXT    NOT NULL,
    feature_names TEXT    NOT NULL,
    users         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS user_names (
    user_key INTEGER PRIMARY KEY,
    name     TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS reject_counts (
    source  TEXT    NOT NULL,
    field   TEXT    NOT NULL,
    count   INTEGER NOT NULL,
    example TEXT    NOT NULL,
    PRIMARY KEY (source, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_features (
    as_of    INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    features BLOB    NOT NULL,
    PRIMARY KEY (as_of, user_id)
) WITHOUT ROWID;
";

/// Embedded store options (`[store]` in the config).
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    /// `normal` survives process crashes (WAL); `full` also power loss.
    pub synchronous_full: bool,
    /// Snapshots kept; older ones are deleted after each build.
    pub snapshot_retention: usize,
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    options: Arc<SqliteOptions>,
    /// The first corruption any call met: from then on `ping` fails with
    /// it, so `/readyz` says the store is broken instead of "reachable".
    corrupt: Arc<std::sync::OnceLock<String>>,
    /// Read-only connections kept between one-user reads (live features),
    /// which would otherwise pay a connection open each.
    readers: Arc<Mutex<Vec<Connection>>>,
}

/// Maps an SQLite failure to a store error. SQLite's messages for
/// SQLITE_CORRUPT and SQLITE_NOTADB are fixed strings, and matching them
/// here catches corruption from every call site, whatever error type the
/// call returned.
pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    let message = e.to_string();
    if message.contains("database disk image is malformed")
        || message.contains("file is not a database")
    {
        StoreError::Corrupt(message)
    } else {
        StoreError::Unavailable(message)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its schema.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the file cannot be opened or migrated.
    pub fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        if let Some(dir) = options.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Taken before opening: the check below vouches for the file as
        // it is now.
        let state = FileState::of(&options.path);
        let conn = Connection::open(&options.path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", options.path.display())))?;
        let sync = if options.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=10000;
             PRAGMA cache_size=-131072; PRAGMA temp_store=MEMORY;"
        ))
        .map_err(unavailable)?;
        let marker = FileState::marker(&options.path);
        match &state {
            Some(state) if state.vouched_by(&marker) => {
                tracing::debug!(path = %options.path.display(), "unchanged since its last integrity check");
            }
            _ => {
                quick_check(&conn, &options.path)?;
                // The check read every page into this connection's cache
                // (up to 128 MiB): give it back, or a server holds the
                // whole file in RSS for pages it may never read again.
                conn.execute_batch("PRAGMA shrink_memory;")
                    .map_err(unavailable)?;
                if let Some(state) = &state {
                    state.record(&marker);
                }
            }
        }
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(conn)),
            options: Arc::new(options),
            corrupt: Arc::default(),
            readers: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.options.path
    }

    /// A separate read-only connection: WAL lets it read a consistent
    /// snapshot while the writer keeps appending.
    pub(super) fn reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.options.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        conn.execute_batch("PRAGMA cache_size=-131072; PRAGMA busy_timeout=10000;")
            .map_err(unavailable)?;
        Ok(conn)
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| unavailable(format!("store task failed: {e}")))?;
        if let Err(StoreError::Corrupt(m)) = &result {
            let first = self.corrupt.get_or_init(|| m.clone());
            tracing::error!(path = %self.options.path.display(), error = %first, "the SQLite store is corrupt");
        }
        result
    }

    pub(super) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves SQLite itself consistent
        // (the transaction rolls back), so a poisoned lock is safe to reuse.
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(unavailable)
    }
}
