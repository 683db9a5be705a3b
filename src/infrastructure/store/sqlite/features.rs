//! The feature port on SQLite: the spec evaluated in Rust over every user's
//! events, read in user order by several threads ([`super::user_scan`]).

use async_trait::async_trait;
use rusqlite::params;

use super::user_scan::{self, UserChunk};
use super::{SqliteStore, unavailable};
use crate::application::ports::{FeatureStore, SnapshotSummary, StoreError, TrainingRead};
use crate::domain::features::{FeatureSpec, UserEvent, session_key};
use crate::domain::label::LabelPolicy;
use crate::domain::model::Dataset;
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::FeatureSnapshot;

/// Id ranges per core a scan is read in: more than one, so a range
/// holding more users than the others (ids are not spread evenly) does not
/// leave the other reading threads idle for long.
const SCAN_PARTS_PER_CORE: usize = 4;

/// One chunk's evaluated users and their rows, `n` values each.
#[derive(Debug, Default)]
pub(super) struct Evaluated {
    pub(super) users: Vec<u64>,
    pub(super) values: Vec<f32>,
}

/// Features are stored as little-endian `f32`s (see `domain::snapshot`).
pub(super) fn encode_row(values: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
}

pub(super) fn decode_row(blob: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        blob.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
}

impl SqliteStore {
    /// Reads every user's events with `event_time <= until` in user order
    /// and hands each chunk of whole users to `work` on every core
    /// ([`user_scan::map_users`]); the chunks' results come back in user
    /// order. The users are read as [`SCAN_PARTS_PER_CORE`] id ranges per
    /// core, several at once, each over its own connection.
    pub(super) fn map_users<R: Send>(
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
    pub(super) fn evaluate_all(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<Vec<Evaluated>, StoreError> {
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

    async fn latest_snapshot(
        &self,
        not_after: Option<i64>,
    ) -> Result<Option<FeatureSnapshot>, StoreError> {
        self.blocking(move |s| s.latest_snapshot_blocking(not_after))
            .await
    }

    async fn user_events(
        &self,
        spec: &FeatureSpec,
        user: u64,
        limit: usize,
    ) -> Result<Option<Vec<UserEvent>>, StoreError> {
        // The type table alone: cloning the whole spec per request would
        // cost more than the read.
        let types = spec.event_types().to_vec();
        self.blocking(move |s| s.user_events_blocking(&types, user, limit))
            .await
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
