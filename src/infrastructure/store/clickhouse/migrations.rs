//! The numbered DDL files (`migrations/`), applied once each and recorded
//! with checksums in `<db>.schema_migrations`.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sql::{self};
use super::{ClickHouseStore, unavailable};
use crate::application::ports::StoreError;

/// The numbered DDL files, in order.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "001_events.sql",
        include_str!("../../../../migrations/001_events.sql"),
    ),
    (
        2,
        "002_feature_snapshots.sql",
        include_str!("../../../../migrations/002_feature_snapshots.sql"),
    ),
    (
        3,
        "003_user_features.sql",
        include_str!("../../../../migrations/003_user_features.sql"),
    ),
    (
        4,
        "004_feature_vectors.sql",
        include_str!("../../../../migrations/004_feature_vectors.sql"),
    ),
    (
        5,
        "005_predictions.sql",
        include_str!("../../../../migrations/005_predictions.sql"),
    ),
    (
        6,
        "006_events_log_position.sql",
        include_str!("../../../../migrations/006_events_log_position.sql"),
    ),
    (
        7,
        "007_log_ranges.sql",
        include_str!("../../../../migrations/007_log_ranges.sql"),
    ),
    (
        8,
        "008_user_names.sql",
        include_str!("../../../../migrations/008_user_names.sql"),
    ),
    (
        9,
        "009_reject_counts.sql",
        include_str!("../../../../migrations/009_reject_counts.sql"),
    ),
    (
        10,
        "010_predictions_user_name.sql",
        include_str!("../../../../migrations/010_predictions_user_name.sql"),
    ),
];

#[derive(Debug, Row, Deserialize)]
pub(super) struct AppliedRow {
    pub(super) version: u32,
    pub(super) checksum: String,
}

/// A migration's DDL for database `db` (the files name `churn.`); shared by
/// `migrate` and `churn render-sql`.
pub fn migration_ddl(sql: &str, db: &str) -> String {
    sql.replace("churn.", &format!("{db}."))
}

/// What `migrate` did.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub already_applied: Vec<String>,
}

impl ClickHouseStore {
    /// Creates the database and applies every migration not yet recorded.
    /// A recorded migration whose file changed is an error, not a re-run.
    ///
    /// # Errors
    /// [`StoreError`] when the server is unreachable, a DDL fails or a file
    /// was edited after being applied.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let db = &self.db;
        let on = self.on_cluster();
        self.client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {db}{on}"))
            .execute()
            .await
            .map_err(unavailable)?;
        // In cluster mode every server keeps the whole record (one
        // replication path for all), so `migrate` may run against any.
        let engine = match self.cluster() {
            Some(_) => format!(
                "ReplicatedMergeTree('/clickhouse/tables/all/{db}/schema_migrations', '{{shard}}_{{replica}}')"
            ),
            None => "MergeTree".to_string(),
        };
        self.client
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on} \
                 (version UInt32, name String, checksum String, applied_at DateTime DEFAULT now()) \
                 ENGINE = {engine} ORDER BY version"
            ))
            .execute()
            .await
            .map_err(unavailable)?;
        let applied: Vec<AppliedRow> = self
            .client
            .query(&format!(
                "SELECT version, checksum FROM {db}.schema_migrations"
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        let mut report = MigrationReport {
            applied: Vec::new(),
            already_applied: Vec::new(),
        };
        for (version, name, sql) in MIGRATIONS {
            let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
            if let Some(row) = applied.iter().find(|r| r.version == *version) {
                if row.checksum != checksum {
                    return Err(StoreError::Corrupt(format!(
                        "migration {name} was changed after it was applied; add a new migration instead"
                    )));
                }
                report.already_applied.push((*name).to_string());
                continue;
            }
            let ddl = migration_ddl(sql, db);
            let statements = match self.cluster() {
                Some(c) => super::cluster::cluster_ddl(&ddl, db, c)?,
                None => vec![ddl],
            };
            for statement in statements {
                self.client
                    .query(&statement)
                    .execute()
                    .await
                    .map_err(|e| unavailable(format!("{name}: {e}")))?;
            }
            self.client
                .query(&format!(
                    "INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES ({version}, {}, {})",
                    sql::quote(name),
                    sql::quote(&checksum)
                ))
                .execute()
                .await
                .map_err(unavailable)?;
            tracing::info!(migration = name, database = %db, "migration applied");
            report.applied.push((*name).to_string());
        }
        Ok(report)
    }

    /// Drops the whole database (tests and `--reset` only).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server refuses.
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.client
            .query(&format!(
                "DROP DATABASE IF EXISTS {}{}",
                self.db,
                self.on_cluster()
            ))
            .execute()
            .await
            .map_err(unavailable)
    }
}
