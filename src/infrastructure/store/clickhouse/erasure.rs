//! Erasure and retention in ClickHouse: `ALTER TABLE … DELETE` mutations
//! (18.16 has no lightweight `DELETE FROM`), on every table holding user
//! rows, waited for so that a returned call means gone; in cluster mode on
//! each shard's local tables (`ON CLUSTER`), waited for on every server.

use std::time::Duration;

use async_trait::async_trait;

use super::{ClickHouseStore, datetime, sql, unavailable};
use crate::application::ports::{ErasedRows, Erasure, StoreError};

/// How long a caller waits for its mutations before hearing they are
/// still running (they finish anyway).
const MUTATION_BUDGET: Duration = Duration::from_secs(120);

impl ClickHouseStore {
    /// Rows of `table` matching `condition` (read through the
    /// Distributed table in cluster mode).
    async fn count_where(&self, table: &str, condition: &str) -> Result<u64, StoreError> {
        self.client
            .query(&format!(
                "SELECT count() FROM {}.{table} WHERE {condition}",
                self.db
            ))
            .fetch_one()
            .await
            .map_err(unavailable)
    }

    /// Deletes the rows matching `condition` from each of `tables` and
    /// waits until every mutation is done (bounded by `budget`).
    pub(super) async fn delete_where(
        &self,
        tables: &[&str],
        condition: &str,
        budget: Duration,
    ) -> Result<(), StoreError> {
        let db = &self.db;
        let storage: Vec<String> = tables.iter().map(|t| self.storage_table(t)).collect();
        for table in &storage {
            self.client
                .query(&format!(
                    "ALTER TABLE {db}.{table}{on} DELETE WHERE {condition}",
                    on = self.on_cluster(),
                ))
                .execute()
                .await
                .map_err(unavailable)?;
        }
        // Mutations are asynchronous (18.16 has no `mutations_sync`); in
        // cluster mode every server's must be done.
        let mutations = match &self.cluster {
            Some(c) => format!("cluster({}, system, mutations)", sql::quote(c)),
            None => "system.mutations".to_string(),
        };
        let names = storage
            .iter()
            .map(|t| sql::quote(t))
            .collect::<Vec<_>>()
            .join(", ");
        let started = std::time::Instant::now();
        loop {
            let pending: u64 = self
                .client
                .query(&format!(
                    "SELECT count() FROM {mutations} WHERE database = {} AND is_done = 0 \
                     AND table IN ({names})",
                    sql::quote(db),
                ))
                .fetch_one()
                .await
                .map_err(unavailable)?;
            if pending == 0 {
                return Ok(());
            }
            if started.elapsed() > budget {
                return Err(StoreError::Unavailable(format!(
                    "{pending} deletions in {names} still running after {} s; they finish in the background",
                    budget.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `user_id IN (…)` of integer keys (no user input reaches the SQL text).
fn user_in(column: &str, users: &[u64]) -> String {
    let list = users
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    format!("{column} IN ({list})")
}

#[async_trait]
impl Erasure for ClickHouseStore {
    async fn forget_users(&self, users: &[u64]) -> Result<ErasedRows, StoreError> {
        if users.is_empty() {
            return Ok(ErasedRows::default());
        }
        let by_user = user_in("user_id", users);
        let by_key = user_in("user_key", users);
        let erased = ErasedRows {
            events: self.count_where("events", &by_user).await?,
            feature_rows: self.count_where("feature_vectors", &by_user).await?,
            predictions: self.count_where("predictions", &by_user).await?,
            names: self.count_where("user_names", &by_key).await?,
        };
        self.delete_where(
            &["events", "feature_vectors", "user_features", "predictions"],
            &by_user,
            MUTATION_BUDGET,
        )
        .await?;
        self.delete_where(&["user_names"], &by_key, MUTATION_BUDGET)
            .await?;
        Ok(erased)
    }

    async fn drop_events_before(&self, before: i64) -> Result<u64, StoreError> {
        let before = datetime("retention cutoff", before.max(0))?;
        let condition = format!("event_time < toDateTime({before})");
        let dropped = self.count_where("events", &condition).await?;
        if dropped > 0 {
            self.delete_where(&["events"], &condition, MUTATION_BUDGET)
                .await?;
        }
        Ok(dropped)
    }
}
