//! Stored snapshots: one `f32` blob per user per snapshot, visible when its
//! header row commits, kept to the retention.

use rusqlite::{Connection, params};

use super::features::{decode_row, encode_row};
use super::{SqliteStore, unavailable};
use crate::application::ports::{SnapshotSummary, StoreError};
use crate::domain::features::FeatureSpec;
use crate::domain::snapshot::{FeatureSnapshot, SnapshotHeader, retained};

impl SqliteStore {
    pub(super) fn build_snapshot_blocking(
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

    pub(super) fn headers(
        conn: &Connection,
        limit: i64,
    ) -> Result<Vec<SnapshotHeader>, StoreError> {
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

    pub(super) fn latest_snapshot_blocking(
        &self,
        not_after: Option<i64>,
    ) -> Result<Option<FeatureSnapshot>, StoreError> {
        let conn = self.reader()?;
        let Some(header) = Self::headers(&conn, i64::MAX)?
            .into_iter()
            .find(|h| not_after.is_none_or(|t| h.as_of <= t))
        else {
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
}
