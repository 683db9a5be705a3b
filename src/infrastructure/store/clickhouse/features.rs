//! The feature port on ClickHouse: snapshots and training sets computed
//! inside the server from the spec rendered to SQL ([`super::sql`]), kept
//! to the retention.

use async_trait::async_trait;
use clickhouse::Row;
use serde::Deserialize;

use super::sql::{self};
use super::{ClickHouseStore, datetime, unavailable};
use crate::application::ports::{FeatureStore, SnapshotSummary, StoreError};
use crate::domain::features::{FeatureSpec, UserEvent, session_key};
use crate::domain::label::LabelPolicy;
use crate::domain::model::Dataset;
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::{FeatureSnapshot, SnapshotHeader, retained};

#[derive(Debug, Row, Deserialize)]
pub(super) struct HeaderRow {
    pub(super) as_of: u32,
    pub(super) created_at: u32,
    pub(super) fingerprint: String,
    pub(super) feature_names: String,
    pub(super) users: u64,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct FeatureRow {
    pub(super) user_id: u64,
    pub(super) features: Vec<f32>,
}

/// One event of one user, as live features read it.
#[derive(Debug, Row, Deserialize)]
struct UserEventRow {
    t: i64,
    event_type: String,
    session_id: Option<String>,
    amount: Option<f64>,
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct LabelledRow {
    pub(super) user_id: u64,
    pub(super) features: Vec<f64>,
    pub(super) churned: u8,
}

#[async_trait]
impl FeatureStore for ClickHouseStore {
    async fn user_events(
        &self,
        spec: &FeatureSpec,
        user: u64,
        limit: usize,
    ) -> Result<Option<Vec<UserEvent>>, StoreError> {
        // Time order, as the evaluator needs (the table's ORDER BY; the
        // SQL batch sums in its own order: amount features agree within
        // float rounding, see `LiveFeatures::check`).
        let rows: Vec<UserEventRow> = self
            .client
            .query(&format!(
                "SELECT toInt64(toUInt32(event_time)) AS t, event_type, session_id, amount \
                 FROM {events} WHERE user_id = {user} \
                 ORDER BY event_time, event_id LIMIT {max}",
                events = self.events_from(),
                max = limit.saturating_add(1),
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        if rows.len() > limit {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .map(|r| UserEvent {
                    time: r.t,
                    type_idx: spec.type_index(&r.event_type),
                    session: session_key(r.session_id.as_deref()),
                    amount: r.amount,
                })
                .collect(),
        ))
    }

    async fn build_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<SnapshotSummary, StoreError> {
        datetime("as_of", as_of)?;
        let db = &self.db;
        let sql = sql::build_snapshot(spec, db, self.dedup(), as_of).map_err(unavailable)?;
        // Cluster mode: each shard aggregates its own users' events into
        // its own feature rows, all shards at once; nothing crosses shards.
        let (clients, local) = self.aggregation_clients();
        let sql = self.for_aggregation(sql, local);
        futures::future::try_join_all(
            clients
                .into_iter()
                .map(|c| async { c.query(&sql).execute().await.map_err(unavailable) }),
        )
        .await?;
        let users: u64 = self
            .client
            .query(&format!(
                "SELECT count() FROM {db}.feature_vectors FINAL WHERE fingerprint = {} AND as_of = toDateTime({as_of})",
                sql::quote(&spec.fingerprint())
            ))
            .fetch_one()
            .await
            .map_err(unavailable)?;
        let header = SnapshotHeader {
            as_of,
            created_at: chrono::Utc::now().timestamp(),
            fingerprint: spec.fingerprint(),
            feature_names: spec.names(),
            users,
        };
        // The header makes the snapshot visible: written last.
        self.client
            .query(&format!(
                "INSERT INTO {db}.feature_snapshots (as_of, created_at, fingerprint, feature_names, users) \
                 VALUES ({as_of}, {}, {}, {}, {users})",
                header.created_at,
                sql::quote(&header.fingerprint),
                sql::quote(&header.names_json())
            ))
            .execute()
            .await
            .map_err(unavailable)?;
        if let Err(e) = self.prune().await {
            // Failures only cost disk; the next build prunes again.
            tracing::warn!(error = %e, "pruning old feature snapshots failed");
        }
        Ok(header.into())
    }

    async fn compute_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<FeatureSnapshot, StoreError> {
        datetime("as_of", as_of)?;
        let sql =
            sql::compute_snapshot(spec, &self.db, self.dedup(), as_of).map_err(unavailable)?;
        let mut snapshot = FeatureSnapshot::new(
            as_of,
            chrono::Utc::now().timestamp(),
            spec.names(),
            spec.fingerprint(),
        );
        let (clients, local) = self.aggregation_clients();
        let sql = self.for_aggregation(sql, local);
        for client in clients {
            let mut cursor = client
                .query(&sql)
                .fetch::<FeatureRow>()
                .map_err(unavailable)?;
            while let Some(row) = cursor.next().await.map_err(unavailable)? {
                snapshot.insert_stored(row.user_id, &row.features)?;
            }
        }
        Ok(snapshot)
    }

    async fn latest_snapshot(
        &self,
        not_after: Option<i64>,
    ) -> Result<Option<FeatureSnapshot>, StoreError> {
        let db = &self.db;
        let Some(header) = self
            // Every retained header (a handful), newest first.
            .headers(1_000)
            .await?
            .into_iter()
            .find(|h| not_after.is_none_or(|t| h.as_of <= t))
        else {
            return Ok(None);
        };
        let mut snapshot = header.empty_snapshot();
        // Stored as Float32: read as such, no widening on the way.
        let mut cursor = self
            .client
            .query(&format!(
                "SELECT user_id, feature_values AS features FROM {db}.feature_vectors FINAL \
                 WHERE fingerprint = {} AND as_of = toDateTime({})",
                sql::quote(&header.fingerprint),
                header.as_of
            ))
            .fetch::<FeatureRow>()
            .map_err(unavailable)?;
        while let Some(row) = cursor.next().await.map_err(unavailable)? {
            snapshot.insert_stored(row.user_id, &row.features)?;
        }
        Ok(Some(snapshot))
    }

    async fn snapshots(&self) -> Result<Vec<SnapshotSummary>, StoreError> {
        Ok(self
            // Every retained header (a handful), newest first.
            .headers(1_000)
            .await?
            .into_iter()
            .map(SnapshotSummary::from)
            .collect())
    }

    async fn training_set(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cutoff: i64,
        sample: RowSample,
    ) -> Result<Dataset, StoreError> {
        // The cutoff and the end of its label window both reach the SQL.
        datetime("cutoff", cutoff)?;
        datetime(
            "cutoff + horizon",
            cutoff.saturating_add(policy.horizon_secs()),
        )?;
        let sql = sql::training_set(spec, &self.db, self.dedup(), policy, cutoff, sample)
            .map_err(unavailable)?;
        // Streamed row by row into the flat set: collecting the rows first
        // held every row twice (a boxed vector each, then the copy), a
        // quarter of `churn train`'s peak memory at 1M users.
        let (clients, local) = self.aggregation_clients();
        let sql = self.for_aggregation(sql, local);
        let mut parts = Vec::with_capacity(clients.len());
        for client in clients {
            let mut cursor = client
                .query(&sql)
                .fetch::<LabelledRow>()
                .map_err(unavailable)?;
            let mut data = Dataset::with_columns(spec.names());
            while let Some(r) = cursor.next().await.map_err(unavailable)? {
                if !data.push(r.user_id, &r.features, r.churned != 0) {
                    return Err(StoreError::Corrupt(format!(
                        "user {} has {} features, expected {}",
                        r.user_id,
                        r.features.len(),
                        spec.len()
                    )));
                }
            }
            parts.push(data);
        }
        Ok(merge_by_user(spec, parts))
    }
}

impl ClickHouseStore {
    /// The newest `limit` snapshot headers, newest first.
    async fn headers(&self, limit: u64) -> Result<Vec<SnapshotHeader>, StoreError> {
        let rows: Vec<HeaderRow> = self
            .client
            .query(&format!(
                "SELECT toUInt32(as_of) AS as_of, toUInt32(created_at) AS created_at, fingerprint, \
                 feature_names, users FROM {}.feature_snapshots FINAL ORDER BY as_of DESC LIMIT {limit}",
                self.db
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|h| {
                Ok(SnapshotHeader {
                    as_of: i64::from(h.as_of),
                    created_at: i64::from(h.created_at),
                    fingerprint: h.fingerprint,
                    feature_names: SnapshotHeader::parse_names(&h.feature_names)?,
                    users: h.users,
                })
            })
            .collect()
    }

    /// Deletes rows **and headers** of snapshots older than the newest
    /// `retention`, and waits (bounded) for the mutations, so the next read
    /// sees what every store keeps.
    async fn prune(&self) -> Result<(), StoreError> {
        let db = &self.db;
        let stored: Vec<u32> = self
            .client
            .query(&format!(
                "SELECT toUInt32(as_of) FROM {db}.feature_snapshots FINAL"
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        let keep = retained(
            stored.iter().map(|t| i64::from(*t)).collect(),
            self.retention,
        );
        let (Some(oldest_kept), true) = (keep.last(), keep.len() < stored.len()) else {
            return Ok(());
        };
        self.delete_where(
            &["feature_vectors", "feature_snapshots"],
            &format!("as_of < toDateTime({oldest_kept})"),
            std::time::Duration::from_secs(10),
        )
        .await
    }
}

/// Training sets read from several shards, as one set ordered by user id
/// (each part is ordered already; the embedded store's order).
fn merge_by_user(spec: &FeatureSpec, mut parts: Vec<Dataset>) -> Dataset {
    if parts.len() <= 1 {
        return parts
            .pop()
            .unwrap_or_else(|| Dataset::with_columns(spec.names()));
    }
    let n = spec.len();
    let mut order: Vec<(u64, usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(p, d)| d.user_ids.iter().enumerate().map(move |(i, u)| (*u, p, i)))
        .collect();
    order.sort_unstable();
    let mut data = Dataset::with_columns(spec.names());
    for (user, p, i) in order {
        let part = &parts[p];
        data.push(user, &part.rows[i * n..(i + 1) * n], part.labels[i]);
    }
    data
}
