//! Erasure and retention in the embedded store: one transaction deletes a
//! user's events, feature rows and name, then the counters that summarise
//! them (`event_stats`, snapshot headers) are recomputed, so nothing reads
//! a count that still includes them.

use async_trait::async_trait;
use rusqlite::Transaction;

use super::SqliteStore;
use crate::application::ports::{ErasedRows, Erasure, StoreError};

/// Recomputes the event summary after rows went away.
fn restate(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE event_stats SET events = (SELECT count(*) FROM events),
           first_time = (SELECT min(event_time) FROM events),
           last_time = (SELECT max(event_time) FROM events)
         WHERE id = 0",
        [],
    )?;
    tx.execute(
        "UPDATE feature_snapshots SET users =
           (SELECT count(*) FROM user_features f WHERE f.as_of = feature_snapshots.as_of)",
        [],
    )?;
    Ok(())
}

#[async_trait]
impl Erasure for SqliteStore {
    async fn forget_users(&self, users: &[u64]) -> Result<ErasedRows, StoreError> {
        let users: Vec<i64> = users.iter().map(|u| *u as i64).collect();
        self.blocking(move |s| {
            s.with_writer(|conn| {
                let tx = conn.transaction()?;
                let mut erased = ErasedRows::default();
                for &user in &users {
                    erased.events +=
                        tx.execute("DELETE FROM events WHERE user_id = ?1", [user])? as u64;
                    erased.feature_rows +=
                        tx.execute("DELETE FROM user_features WHERE user_id = ?1", [user])? as u64;
                    erased.names +=
                        tx.execute("DELETE FROM user_names WHERE user_key = ?1", [user])? as u64;
                }
                restate(&tx)?;
                tx.commit()?;
                Ok(erased)
            })
        })
        .await
    }

    async fn drop_events_before(&self, before: i64) -> Result<u64, StoreError> {
        self.blocking(move |s| {
            s.with_writer(|conn| {
                let tx = conn.transaction()?;
                let dropped = tx.execute("DELETE FROM events WHERE event_time < ?1", [before])?;
                if dropped > 0 {
                    restate(&tx)?;
                }
                tx.commit()?;
                Ok(dropped as u64)
            })
        })
        .await
    }
}
