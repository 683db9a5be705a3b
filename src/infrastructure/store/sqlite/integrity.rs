//! The integrity check when the file is opened (`PRAGMA quick_check`
//! within a time budget), skipped for a file unchanged since it passed.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::unavailable;
use crate::application::ports::StoreError;

/// How long the integrity check at open may take; a larger file is
/// checked this long and then trusted (the check is logged as partial).
const INTEGRITY_CHECK_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// `PRAGMA quick_check` within [`INTEGRITY_CHECK_BUDGET`]: structure of
/// every b-tree page, a fraction of a full `integrity_check`'s time.
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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
pub(super) struct FileState(String);

impl FileState {
    /// `None` when the file is new, or a WAL with frames not yet
    /// checkpointed is beside it (those frames were never checked).
    pub(super) fn of(path: &Path) -> Option<Self> {
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
    pub(super) fn marker(path: &Path) -> PathBuf {
        let mut m = path.as_os_str().to_owned();
        m.push(".checked");
        PathBuf::from(m)
    }

    pub(super) fn vouched_by(&self, marker: &Path) -> bool {
        std::fs::read_to_string(marker).is_ok_and(|m| m == self.0)
    }

    /// Best effort: without the marker the next open checks again.
    pub(super) fn record(&self, marker: &Path) {
        if let Err(e) = std::fs::write(marker, &self.0) {
            tracing::debug!(path = %marker.display(), error = %e, "integrity check not recorded");
        }
    }
}
