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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, params};

use crate::application::ports::{
    AppendOutcome, EventStats, EventStore, FeatureStore, RejectTally, SnapshotSummary, StoreError,
    TrainingRead, TypeCount,
};
use crate::domain::event::Event;
use crate::domain::features::{FeatureSpec, UserEvent, session_key};
use crate::domain::label::LabelPolicy;
use crate::domain::model::Dataset;
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::{FeatureSnapshot, SnapshotHeader, retained};
use crate::infrastructure::store::user_scan::{self, UserChunk};

const SCHEMA: &str = "
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
}

/// How long the integrity check at open may take; a larger file is
/// checked this long and then trusted (the check is logged as partial).
const INTEGRITY_CHECK_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// Maps an SQLite failure to a store error. SQLite's messages for
/// SQLITE_CORRUPT and SQLITE_NOTADB are fixed strings, and matching them
/// here catches corruption from every call site, whatever error type the
/// call returned.
fn unavailable(e: impl std::fmt::Display) -> StoreError {
    let message = e.to_string();
    if message.contains("database disk image is malformed")
        || message.contains("file is not a database")
    {
        StoreError::Corrupt(message)
    } else {
        StoreError::Unavailable(message)
    }
}

/// `PRAGMA quick_check` within [`INTEGRITY_CHECK_BUDGET`]: structure of
/// every b-tree page, a fraction of a full `integrity_check`'s time.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // A watchdog interrupts the check at its budget.
    let interrupt = conn.get_interrupt_handle();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(INTEGRITY_CHECK_BUDGET).is_err() {
            interrupt.interrupt();
        }
    });
    let verdict: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check(20)")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect());
    let _ = done.send(());
    let _ = watchdog.join();
    match verdict {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(()),
        Ok(lines) => Err(StoreError::Corrupt(format!(
            "{} failed its integrity check ({}); restore it from a backup, or move it aside and re-ingest",
            path.display(),
            lines.join("; ")
        ))),
        Err(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            tracing::warn!(
                path = %path.display(),
                budget = ?INTEGRITY_CHECK_BUDGET,
                "integrity check stopped at its time budget; the rest of the file is unchecked"
            );
            Ok(())
        }
        Err(e) => match unavailable(&e) {
            StoreError::Corrupt(m) => Err(StoreError::Corrupt(format!(
                "{}: {m}; restore it from a backup, or move it aside and re-ingest",
                path.display()
            ))),
            other => Err(other),
        },
    }
}

/// The database file as an integrity check saw it: length and modification
/// time. Every write reaches the file through the WAL and a checkpoint, and
/// changes both; so while they are unchanged the file is the one that
/// passed, and checking it again at every command's start (seconds for a
/// large file) proves nothing new. Damage that leaves them unchanged (bit
/// rot) still surfaces on the first read, as a remembered corruption.
#[derive(Debug, PartialEq, Eq)]
struct FileState(String);

impl FileState {
    /// `None` when the file is new, or a WAL with frames not yet
    /// checkpointed is beside it (those frames were never checked).
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return None;
        }
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(Self(format!("{} {}\n", meta.len(), mtime.as_nanos())))
    }

    /// Where the last passed check's state is kept, beside the file.
    fn marker(path: &Path) -> PathBuf {
        let mut m = path.as_os_str().to_owned();
        m.push(".checked");
        PathBuf::from(m)
    }

    fn vouched_by(&self, marker: &Path) -> bool {
        std::fs::read_to_string(marker).is_ok_and(|m| m == self.0)
    }

    /// Best effort: without the marker the next open checks again.
    fn record(&self, marker: &Path) {
        if let Err(e) = std::fs::write(marker, &self.0) {
            tracing::debug!(path = %marker.display(), error = %e, "integrity check not recorded");
        }
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.options.path
    }

    /// A separate read-only connection: WAL lets it read a consistent
    /// snapshot while the writer keeps appending.
    fn reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.options.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        conn.execute_batch("PRAGMA cache_size=-131072; PRAGMA busy_timeout=10000;")
            .map_err(unavailable)?;
        Ok(conn)
    }

    async fn blocking<T: Send + 'static>(
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

    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves SQLite itself consistent
        // (the transaction rolls back), so a poisoned lock is safe to reuse.
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(unavailable)
    }

    /// Reads every user's events with `event_time <= until` in user order
    /// and hands each chunk of whole users to `work` on every core
    /// ([`user_scan::map_users`]); the chunks' results come back in user
    /// order. The users are read as [`SCAN_PARTS_PER_CORE`] id ranges per
    /// core, several at once, each over its own connection.
    fn map_users<R: Send>(
        &self,
        spec: &FeatureSpec,
        until: i64,
        work: impl Fn(&UserChunk) -> R + Sync,
    ) -> Result<Vec<R>, StoreError> {
        // Two queries: SQLite answers a lone min() or max() of the key
        // with one seek, but both in one query with a full scan.
        let conn = self.reader()?;
        let bound = |sql: &str| -> Result<Option<i64>, StoreError> {
            conn.query_row(sql, [], |r| r.get(0)).map_err(unavailable)
        };
        let (min, max) = (
            bound("SELECT min(user_id) FROM events")?,
            bound("SELECT max(user_id) FROM events")?,
        );
        let (Some(min), Some(max)) = (min, max) else {
            return Ok(Vec::new());
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let ranges = user_scan::id_ranges(min, max, SCAN_PARTS_PER_CORE * cores);
        user_scan::map_users(
            ranges.len(),
            |part, feed| {
                let (lo, hi) = ranges[part];
                let conn = self.reader()?;
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT user_id, event_time, event_type, session_id, amount FROM events
                         WHERE user_id BETWEEN ?1 AND ?2 AND event_time <= ?3
                         ORDER BY user_id, event_time, event_id",
                    )
                    .map_err(unavailable)?;
                let mut rows = stmt.query(params![lo, hi, until]).map_err(unavailable)?;
                // Types repeat on nearly every row: remember the last one's
                // index instead of searching the type table each time.
                let mut last_type: (String, u16) = (String::new(), 0);
                while let Some(row) = rows.next().map_err(unavailable)? {
                    if feed.closed() {
                        break;
                    }
                    let user: i64 = row.get(0).map_err(unavailable)?;
                    let event_type = row.get_ref(2).map_err(unavailable)?;
                    let event_type = event_type
                        .as_str()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    if event_type != last_type.0 {
                        last_type = (event_type.to_string(), spec.type_index(event_type));
                    }
                    let session = row.get_ref(3).map_err(unavailable)?;
                    let session = session
                        .as_str_or_null()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    feed.push(
                        user as u64,
                        UserEvent {
                            time: row.get(1).map_err(unavailable)?,
                            type_idx: last_type.1,
                            session: session_key(session),
                            amount: row.get::<_, Option<f64>>(4).map_err(unavailable)?,
                        },
                    );
                }
                Ok(())
            },
            work,
        )
    }

    /// Every user's features as of `as_of` as `f32` (as snapshots store
    /// them), in user order, one flat block per chunk: no allocation per
    /// user, so ten million users cost their values and nothing more.
    fn evaluate_all(&self, spec: &FeatureSpec, as_of: i64) -> Result<Vec<Evaluated>, StoreError> {
        self.map_users(spec, as_of, |chunk| {
            let mut part = Evaluated::default();
            let mut out = Vec::with_capacity(spec.len());
            for (user, events) in chunk.iter() {
                if spec.evaluate(events, as_of, &mut out) {
                    part.users.push(user);
                    part.values.extend(out.iter().map(|v| *v as f32));
                }
            }
            part
        })
    }

    fn build_snapshot_blocking(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<SnapshotSummary, StoreError> {
        let parts = self.evaluate_all(spec, as_of)?;
        let n = spec.len();
        let header = SnapshotHeader {
            as_of,
            created_at: chrono::Utc::now().timestamp(),
            fingerprint: spec.fingerprint(),
            feature_names: spec.names(),
            users: parts.iter().map(|p| p.users.len() as u64).sum(),
        };
        let retention = self.options.snapshot_retention;
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM user_features WHERE as_of = ?1", params![as_of])?;
            tx.execute("DELETE FROM feature_snapshots WHERE as_of = ?1", params![as_of])?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO user_features (as_of, user_id, features) VALUES (?1, ?2, ?3)",
                )?;
                let mut blob = Vec::with_capacity(4 * n);
                for part in &parts {
                    for (user, row) in part.users.iter().zip(part.values.chunks_exact(n.max(1))) {
                        encode_row(row, &mut blob);
                        ins.execute(params![as_of, *user as i64, blob])?;
                    }
                }
            }
            tx.execute(
                "INSERT INTO feature_snapshots (as_of, created_at, fingerprint, feature_names, users)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    header.as_of,
                    header.created_at,
                    header.fingerprint,
                    header.names_json(),
                    header.users as i64
                ],
            )?;
            let stored: Vec<i64> = tx
                .prepare("SELECT as_of FROM feature_snapshots")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let keep = retained(stored.clone(), retention);
            for old in stored.iter().filter(|t| !keep.contains(t)) {
                tx.execute("DELETE FROM user_features WHERE as_of = ?1", params![old])?;
                tx.execute("DELETE FROM feature_snapshots WHERE as_of = ?1", params![old])?;
            }
            tx.commit()
        })?;
        Ok(SnapshotSummary {
            as_of,
            users: header.users,
            features: spec.len(),
            fingerprint: header.fingerprint,
        })
    }

    fn headers(conn: &Connection, limit: i64) -> Result<Vec<SnapshotHeader>, StoreError> {
        let mut stmt = conn
            .prepare(
                "SELECT as_of, created_at, fingerprint, feature_names, users FROM feature_snapshots
                 ORDER BY as_of DESC LIMIT ?1",
            )
            .map_err(unavailable)?;
        let raw = stmt
            .query_map(params![limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(unavailable)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)?;
        raw.into_iter()
            .map(|(as_of, created_at, fingerprint, names, users)| {
                Ok(SnapshotHeader {
                    as_of,
                    created_at,
                    fingerprint,
                    feature_names: SnapshotHeader::parse_names(&names)?,
                    users: users.max(0) as u64,
                })
            })
            .collect()
    }

    fn latest_snapshot_blocking(&self) -> Result<Option<FeatureSnapshot>, StoreError> {
        let conn = self.reader()?;
        let Some(header) = Self::headers(&conn, 1)?.into_iter().next() else {
            return Ok(None);
        };
        let mut snapshot = header.empty_snapshot();
        let mut stmt = conn
            .prepare("SELECT user_id, features FROM user_features WHERE as_of = ?1")
            .map_err(unavailable)?;
        let mut rows = stmt.query(params![header.as_of]).map_err(unavailable)?;
        let mut row_buf = Vec::with_capacity(header.feature_names.len());
        while let Some(row) = rows.next().map_err(unavailable)? {
            let user: i64 = row.get(0).map_err(unavailable)?;
            let blob = row.get_ref(1).map_err(unavailable)?;
            let blob = blob
                .as_blob()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            decode_row(blob, &mut row_buf);
            snapshot.insert_stored(user as u64, &row_buf)?;
        }
        Ok(Some(snapshot))
    }

    /// One scan for every cutoff: each user's history is read once and
    /// labelled and evaluated at each `(cutoff, sample)` (and at
    /// `snapshot_at`, as a snapshot); the datasets come back in the order
    /// of `cuts`.
    fn training_sets_blocking(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cuts: &[(i64, RowSample)],
        snapshot_at: Option<i64>,
    ) -> Result<TrainingRead, StoreError> {
        let names = spec.names();
        let horizon = policy.horizon_secs();
        let Some(until) = cuts
            .iter()
            .map(|(c, _)| *c + horizon)
            .chain(snapshot_at)
            .max()
        else {
            return Ok(TrainingRead::default());
        };
        let mut snapshot = snapshot_at.map(|t| {
            FeatureSnapshot::new(
                t,
                chrono::Utc::now().timestamp(),
                names.clone(),
                spec.fingerprint(),
            )
        });
        // The label's event types must be in the evaluator's type table
        // (added at the end: the features' own type indexes, and so their
        // values, are unchanged).
        let spec = &spec
            .clone()
            .with_types(&policy.event_types())
            .map_err(StoreError::Insufficient)?;
        let rule = policy.compile(spec);
        let parts = self.map_users(spec, until, |chunk| {
            let mut sets: Vec<Dataset> = cuts
                .iter()
                .map(|_| Dataset::with_columns(names.clone()))
                .collect();
            let mut at = Evaluated::default();
            let mut out = Vec::with_capacity(spec.len());
            for (user, events) in chunk.iter() {
                for ((cutoff, sample), data) in cuts.iter().zip(&mut sets) {
                    // What a scan up to this cutoff's horizon would read.
                    let seen = &events[..events.partition_point(|e| e.time <= cutoff + horizon)];
                    if sample.keeps(user)
                        && let Some(churned) = rule.label(seen, *cutoff)
                        && spec.evaluate(seen, *cutoff, &mut out)
                    {
                        // The evaluator always yields one value per feature.
                        data.push(user, &out, churned);
                    }
                }
                if let Some(t) = snapshot_at
                    && spec.evaluate(events, t, &mut out)
                {
                    at.users.push(user);
                    at.values.extend(out.iter().map(|v| *v as f32));
                }
            }
            (sets, at)
        })?;
        let mut sets: Vec<Dataset> = cuts
            .iter()
            .map(|_| Dataset::with_columns(names.clone()))
            .collect();
        if let Some(s) = &mut snapshot {
            s.reserve(parts.iter().map(|(_, at)| at.users.len()).sum());
        }
        let n = names.len().max(1);
        for (part, at) in parts {
            for (set, p) in sets.iter_mut().zip(part) {
                set.extend(p);
            }
            if let Some(s) = &mut snapshot {
                for (user, row) in at.users.iter().zip(at.values.chunks_exact(n)) {
                    s.insert_stored(*user, row)?;
                }
            }
        }
        Ok(TrainingRead {
            sets,
            snapshot: snapshot.map(Ok),
        })
    }
}

/// Rows per `INSERT` statement when appending: one statement step per row
/// was most of an append's cost (the VDBE program runs per statement);
/// 64 rows x 6 parameters stay far below SQLite's parameter limit.
const ROWS_PER_INSERT: usize = 64;

/// `INSERT OR IGNORE` of `rows` events.
fn insert_events_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO events \
         (user_id, event_time, event_id, event_type, session_id, amount) VALUES ",
    );
    for k in 0..rows {
        if k > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?)");
    }
    sql
}

/// Id ranges per core a scan is read in: more than one, so a range
/// holding more users than the others (ids are not spread evenly) does not
/// leave the other reading threads idle for long.
const SCAN_PARTS_PER_CORE: usize = 4;

/// Seeks per event below which counting users by seeking from one user id
/// to the next beats reading every event: a seek costs about 30 rows of a
/// sequential scan (4 µs vs 0.14 µs measured), so seeking pays off from 30
/// events per user, and stopping after `events / 50` seeks bounds the
/// waste when users have fewer (the count then falls back to the scan).
const USER_SEEKS_PER_EVENT: i64 = 50;

/// The number of distinct users: a skip scan over the clustered key (one
/// seek per user, SQLite does not skip-scan by itself), or a full scan
/// when users have too few events each for seeking to pay.
fn count_users(conn: &Connection, events: i64) -> Result<u64, StoreError> {
    let budget = events / USER_SEEKS_PER_EVENT + 1;
    let seeked: i64 = conn
        .query_row(
            "WITH RECURSIVE u(id) AS (
                 SELECT min(user_id) FROM events
                 UNION ALL
                 SELECT (SELECT user_id FROM events WHERE user_id > u.id ORDER BY user_id LIMIT 1)
                 FROM u WHERE u.id IS NOT NULL LIMIT ?1
             )
             SELECT count(id) FROM u",
            params![budget + 1],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if seeked <= budget {
        return Ok(seeked as u64);
    }
    let users: i64 = conn
        .query_row("SELECT count(DISTINCT user_id) FROM events", [], |r| {
            r.get(0)
        })
        .map_err(unavailable)?;
    Ok(users as u64)
}

/// One chunk's evaluated users and their rows, `n` values each.
#[derive(Debug, Default)]
struct Evaluated {
    users: Vec<u64>,
    values: Vec<f32>,
}

/// Features are stored as little-endian `f32`s (see `domain::snapshot`).
fn encode_row(values: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
}

fn decode_row(blob: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        blob.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, events: Vec<Event>) -> Result<AppendOutcome, StoreError> {
        if events.is_empty() {
            return Ok(AppendOutcome::default());
        }
        // In key order, each insert lands next to the previous one in the
        // clustered B-tree: a time-ordered log (every user interleaved)
        // then walks the tree once instead of jumping per event. Keys are
        // computed once (the id is a SHA-256).
        let mut order: Vec<(i64, i64, i64, usize)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.user_id() as i64, e.event_time(), e.event_id(), i))
            .collect();
        order.sort_unstable();
        // Stored events are within [first, last] already, so the batch's
        // own bounds are right whether or not its extremes were new.
        let first = events.iter().map(Event::event_time).min();
        let last = events.iter().map(Event::event_time).max();
        self.blocking(move |s| {
            s.with_writer(|conn| {
                let tx = conn.transaction()?;
                let mut inserted = 0u64;
                let full = insert_events_sql(ROWS_PER_INSERT);
                for rows in order.chunks(ROWS_PER_INSERT) {
                    let mut stmt = if rows.len() == ROWS_PER_INSERT {
                        tx.prepare_cached(&full)?
                    } else {
                        tx.prepare_cached(&insert_events_sql(rows.len()))?
                    };
                    for (k, &(user, time, id, i)) in rows.iter().enumerate() {
                        let e = &events[i];
                        let at = 6 * k;
                        stmt.raw_bind_parameter(at + 1, user)?;
                        stmt.raw_bind_parameter(at + 2, time)?;
                        stmt.raw_bind_parameter(at + 3, id)?;
                        stmt.raw_bind_parameter(at + 4, e.event_type())?;
                        stmt.raw_bind_parameter(at + 5, e.session_id())?;
                        stmt.raw_bind_parameter(at + 6, e.amount())?;
                    }
                    // OR IGNORE: the changes are the rows actually new.
                    inserted += stmt.raw_execute()? as u64;
                }
                if inserted > 0 {
                    tx.execute(
                        "UPDATE event_stats SET events = events + ?1,
                           first_time = min(coalesce(first_time, ?2), ?2),
                           last_time = max(coalesce(last_time, ?3), ?3)
                         WHERE id = 0",
                        params![inserted as i64, first, last],
                    )?;
                }
                tx.commit()?;
                Ok(AppendOutcome {
                    inserted,
                    duplicates: events.len() as u64 - inserted,
                })
            })
        })
        .await
    }

    async fn stats(&self) -> Result<EventStats, StoreError> {
        self.blocking(|s| {
            let conn = s.reader()?;
            let (events, first, last) = conn
                .query_row(
                    "SELECT events, first_time, last_time FROM event_stats WHERE id = 0",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(unavailable)?;
            let users = count_users(&conn, events)?;
            Ok(EventStats {
                events: events as u64,
                users,
                first_event_time: first,
                last_event_time: last,
            })
        })
        .await
    }

    async fn type_counts(&self) -> Result<Vec<TypeCount>, StoreError> {
        self.blocking(|s| {
            let conn = s.reader()?;
            let mut stmt = conn
                .prepare(
                    "SELECT event_type, count(*), count(DISTINCT user_id), count(amount), \
                     count(session_id), count(CASE WHEN amount < 0 THEN 1 END), \
                     coalesce(sum(CASE WHEN amount > 0 THEN amount END), 0), \
                     coalesce(sum(CASE WHEN amount < 0 THEN amount END), 0) \
                     FROM events GROUP BY event_type ORDER BY count(*) DESC, event_type",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TypeCount {
                        event_type: r.get(0)?,
                        events: r.get::<_, i64>(1)? as u64,
                        users: r.get::<_, i64>(2)? as u64,
                        with_amount: r.get::<_, i64>(3)? as u64,
                        with_session: r.get::<_, i64>(4)? as u64,
                        with_negative_amount: r.get::<_, i64>(5)? as u64,
                        positive_amount_sum: r.get(6)?,
                        negative_amount_sum: r.get(7)?,
                    })
                })
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }

    async fn register_names(&self, names: &[(u64, &str)]) -> Result<Vec<u64>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<(i64, String)> = names
            .iter()
            .map(|(k, n)| (*k as i64, (*n).to_string()))
            .collect();
        self.blocking(move |s| {
            s.with_writer(|conn| {
                let tx = conn.transaction()?;
                let mut collided = Vec::new();
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO user_names (user_key, name) VALUES (?1, ?2)",
                    )?;
                    let mut held =
                        tx.prepare_cached("SELECT name FROM user_names WHERE user_key = ?1")?;
                    for (key, name) in &names {
                        if insert.execute(params![key, name])? == 0 {
                            let existing: String = held.query_row(params![key], |r| r.get(0))?;
                            if existing != *name {
                                collided.push(*key as u64);
                            }
                        }
                    }
                }
                tx.commit()?;
                Ok(collided)
            })
        })
        .await
    }

    async fn user_names(
        &self,
        keys: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, StoreError> {
        let keys: Vec<i64> = keys
            .iter()
            .filter(|k| crate::domain::user::is_name_key(**k))
            .map(|k| *k as i64)
            .collect();
        if keys.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        self.blocking(move |s| {
            let conn = s.reader()?;
            let mut stmt = conn
                .prepare_cached("SELECT name FROM user_names WHERE user_key = ?1")
                .map_err(unavailable)?;
            let mut out = std::collections::HashMap::with_capacity(keys.len());
            for key in keys {
                let name: Option<String> = stmt
                    .query_row(params![key], |r| r.get(0))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        other => Err(other),
                    })
                    .map_err(unavailable)?;
                if let Some(name) = name {
                    out.insert(key as u64, name);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn record_rejects(&self, tallies: &[RejectTally]) -> Result<(), StoreError> {
        if tallies.is_empty() {
            return Ok(());
        }
        let tallies = tallies.to_vec();
        self.blocking(move |s| {
            s.with_writer(|conn| {
                let tx = conn.transaction()?;
                {
                    let mut upsert = tx.prepare_cached(
                        "INSERT INTO reject_counts (source, field, count, example) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (source, field) DO UPDATE SET count = count + excluded.count",
                    )?;
                    for t in &tallies {
                        upsert.execute(params![t.source, t.field, t.count as i64, t.example])?;
                    }
                }
                tx.commit()
            })
        })
        .await
    }

    async fn reject_tallies(&self) -> Result<Vec<RejectTally>, StoreError> {
        self.blocking(|s| {
            let conn = s.reader()?;
            let mut stmt = conn
                .prepare(
                    "SELECT source, field, count, example FROM reject_counts \
                     ORDER BY count DESC, source, field",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(RejectTally {
                        source: r.get(0)?,
                        field: r.get(1)?,
                        count: r.get::<_, i64>(2)? as u64,
                        example: r.get(3)?,
                    })
                })
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if let Some(m) = self.corrupt.get() {
            return Err(StoreError::Corrupt(format!(
                "{} is corrupt ({m}); restore it from a backup, or move it aside and re-ingest",
                self.options.path.display()
            )));
        }
        self.blocking(|s| {
            s.reader()?
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl FeatureStore for SqliteStore {
    async fn build_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<SnapshotSummary, StoreError> {
        let spec = spec.clone();
        self.blocking(move |s| s.build_snapshot_blocking(&spec, as_of))
            .await
    }

    async fn compute_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<FeatureSnapshot, StoreError> {
        let spec = spec.clone();
        self.blocking(move |s| {
            let mut snapshot = FeatureSnapshot::new(
                as_of,
                chrono::Utc::now().timestamp(),
                spec.names(),
                spec.fingerprint(),
            );
            let parts = s.evaluate_all(&spec, as_of)?;
            snapshot.reserve(parts.iter().map(|p| p.users.len()).sum());
            let n = spec.len().max(1);
            for part in parts {
                for (user, row) in part.users.iter().zip(part.values.chunks_exact(n)) {
                    snapshot.insert_stored(*user, row)?;
                }
            }
            Ok(snapshot)
        })
        .await
    }

    async fn latest_snapshot(&self) -> Result<Option<FeatureSnapshot>, StoreError> {
        self.blocking(|s| s.latest_snapshot_blocking()).await
    }

    async fn snapshots(&self) -> Result<Vec<SnapshotSummary>, StoreError> {
        self.blocking(|s| {
            let headers = Self::headers(&s.reader()?, i64::MAX)?;
            Ok(headers.into_iter().map(SnapshotSummary::from).collect())
        })
        .await
    }

    async fn training_set(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cutoff: i64,
        sample: RowSample,
    ) -> Result<Dataset, StoreError> {
        let read = self
            .training_sets(spec, policy, &[(cutoff, sample)], None)
            .await?;
        Ok(read.sets.into_iter().next().unwrap_or_default())
    }

    async fn training_sets(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cuts: &[(i64, RowSample)],
        snapshot_at: Option<i64>,
    ) -> Result<TrainingRead, StoreError> {
        let (spec, policy, cuts) = (spec.clone(), policy.clone(), cuts.to_vec());
        self.blocking(move |s| s.training_sets_blocking(&spec, &policy, &cuts, snapshot_at))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of counting users give the exact count: seeking (many
    /// events per user) and the scan it falls back to (few per user).
    #[test]
    fn users_are_counted_exactly_by_seeking_or_scanning() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let insert = |users: i64, per_user: i64| {
            for u in 0..users {
                for t in 0..per_user {
                    conn.execute(
                        "INSERT INTO events (user_id, event_time, event_id, event_type)
                         VALUES (?1, ?2, ?3, 'login')",
                        params![u * 1_000_003, t, u * 1_000 + t],
                    )
                    .unwrap();
                }
            }
        };
        assert_eq!(count_users(&conn, 0).unwrap(), 0);
        // 40 users x 100 events: 4000 / 50 = 80 seeks allowed, 41 needed.
        insert(40, 100);
        assert_eq!(count_users(&conn, 4_000).unwrap(), 40);
        // 500 more users with 2 events: 5000 events allow 101 seeks, 540
        // users need more, so the scan answers.
        conn.execute("DELETE FROM events", []).unwrap();
        insert(40, 100);
        for u in 1_000..1_500i64 {
            for t in 0..2 {
                conn.execute(
                    "INSERT INTO events (user_id, event_time, event_id, event_type)
                     VALUES (?1, ?2, ?3, 'login')",
                    params![u, t, t],
                )
                .unwrap();
            }
        }
        assert_eq!(count_users(&conn, 5_000).unwrap(), 540);
        // The budget boundary: exactly as many users as seeks allowed.
        assert_eq!(
            count_users(&conn, (540 - 1) * USER_SEEKS_PER_EVENT).unwrap(),
            540
        );
    }
}
