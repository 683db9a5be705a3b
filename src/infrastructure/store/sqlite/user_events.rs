//! One user's history for live features: a primary-key range read over a
//! pooled read-only connection (the events table is clustered by user, so
//! this is one B-tree seek and a sequential read).

use rusqlite::params;

use super::{SqliteStore, unavailable};
use crate::application::ports::StoreError;
use crate::domain::features::{UserEvent, session_key, type_index};

/// Idle read connections kept for one-user reads; more concurrent reads
/// open their own and close them after.
const POOLED_READERS: usize = 8;

impl SqliteStore {
    /// The events of `user` in key order, or `None` past `limit` events.
    pub(super) fn user_events_blocking(
        &self,
        types: &[String],
        user: u64,
        limit: usize,
    ) -> Result<Option<Vec<UserEvent>>, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = self.reader()?;
                // Point reads: a small page cache each (the OS caches the
                // file), not the 128 MiB a full scan's connection gets,
                // which POOLED_READERS connections would hold for good.
                c.execute_batch("PRAGMA cache_size=-2048;")
                    .map_err(unavailable)?;
                c
            }
        };
        let result = read_user(&conn, types, user, limit);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED_READERS {
            pool.push(conn);
        }
        result
    }
}

fn read_user(
    conn: &rusqlite::Connection,
    types: &[String],
    user: u64,
    limit: usize,
) -> Result<Option<Vec<UserEvent>>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT event_time, event_type, session_id, amount FROM events
             WHERE user_id = ?1 ORDER BY event_time, event_id LIMIT ?2",
        )
        .map_err(unavailable)?;
    let max = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let mut rows = stmt.query(params![user as i64, max]).map_err(unavailable)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(unavailable)? {
        if events.len() == limit {
            return Ok(None);
        }
        let event_type = row.get_ref(1).map_err(unavailable)?;
        let event_type = event_type
            .as_str()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let session = row.get_ref(2).map_err(unavailable)?;
        let session = session
            .as_str_or_null()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        events.push(UserEvent {
            time: row.get(0).map_err(unavailable)?,
            type_idx: type_index(types, event_type),
            session: session_key(session),
            amount: row.get::<_, Option<f64>>(3).map_err(unavailable)?,
        });
    }
    Ok(Some(events))
}
