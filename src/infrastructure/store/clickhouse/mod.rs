//! `ClickHouseStore`: events in `<db>.events`, features in
//! `<db>.user_features`, computed inside ClickHouse from the shared spec
//! (see [`sql`]). The HTTP layer never sees this type:
//! it implements the same `EventStore`/`FeatureStore` ports as the
//! embedded store.
//!
//! - Writes are batched RowBinary inserts. Redeliveries are filtered before
//!   the insert so counters stay exact and reads need no `FINAL`: streamed
//!   records by their log position (the `log_ranges` ledger, see
//!   [`EventStore::append_from_log`] below), other batches by an event-id
//!   lookup. `ReplacingMergeTree` still collapses what slips past on merge;
//!   with `dedup_check` off, reads use `FINAL` instead.
//! - Migrations (`migrations/NNN_*.sql`, compiled in) are applied once each
//!   and recorded in `<db>.schema_migrations`.
//! - Against 18.16 the client must run with validation off (the server lacks
//!   `RowBinaryWithNamesAndTypes`); modern servers keep it on, which catches
//!   type mismatches (`clickhouse.validation`).
//!
//! Layout, as `store/sqlite/`: [`events`] (the event port: inserts, the
//! redelivery checks, names, reject counts), [`ledger`] (streamed batches'
//! log ranges), [`features`] (snapshots and training sets), [`predictions`]
//! (`churn.predictions`), [`migrations`], and [`sql`] (the spec rendered
//! to SQL).

mod events;
mod features;
mod ledger;
mod migrations;
mod predictions;
pub mod sql;

use clickhouse::Client;

use crate::application::ports::StoreError;
pub use events::STORED_IDS_PER_SLICE;
pub use migrations::{MIGRATIONS, MigrationReport, migration_ddl};
use sql::{Dedup, identifier};

/// Connection settings (`[clickhouse]` in the config).
#[derive(Debug, Clone)]
pub struct ClickHouseOptions {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    pub validation: bool,
    pub snapshot_retention: usize,
    /// Recognise redeliveries before inserting so they are never written
    /// (exact ingest counters, reads without `FINAL`): Kafka records by
    /// their logged position, other batches by an event-id lookup. Off:
    /// every row is written and `FINAL` deduplicates on read.
    pub dedup_check: bool,
}

/// The ClickHouse adapter. Cheap to clone.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    db: String,
    retention: usize,
    dedup_check: bool,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("clickhouse: {e}"))
}

pub(super) fn datetime(what: &str, t: i64) -> Result<u32, StoreError> {
    u32::try_from(t).map_err(|_| StoreError::Corrupt(format!("{what} {t} outside DateTime")))
}

impl ClickHouseStore {
    /// A client for `options` (no I/O yet).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for an unsafe database name.
    pub fn new(options: &ClickHouseOptions) -> Result<Self, StoreError> {
        let db = identifier(&options.database)
            .map_err(unavailable)?
            .to_string();
        let mut client = Client::default()
            .with_url(&options.url)
            .with_user(&options.user)
            .with_validation(options.validation)
            // The redelivery check sends a batch's ids inline (20k ids are
            // ~400 KB of SQL); the default 256 KiB limit is too small. The
            // database name is a checked identifier, hence `insert_unescaped`.
            .with_setting("max_query_size", "33554432");
        if !options.password.is_empty() {
            client = client.with_password(&options.password);
        }
        Ok(Self {
            client,
            db,
            retention: options.snapshot_retention.max(1),
            dedup_check: options.dedup_check,
        })
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    /// Where this store removes redeliveries (`dedup_check`).
    pub fn dedup(&self) -> Dedup {
        if self.dedup_check {
            Dedup::OnWrite
        } else {
            Dedup::OnRead
        }
    }

    pub(super) fn events_final(&self) -> &'static str {
        self.dedup().final_keyword()
    }
}
