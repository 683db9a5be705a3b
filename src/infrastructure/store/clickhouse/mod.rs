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

pub mod cluster;
mod erasure;
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
    /// Cluster mode: the `remote_servers` cluster the tables are spread
    /// over (see [`cluster`]); empty = one server.
    pub cluster: String,
    /// Cluster mode: one HTTP URL per shard, where per-user aggregations
    /// (feature builds, training sets) run on the shard's own rows. Empty
    /// = they run through the Distributed tables on the server at `url`.
    pub shard_urls: Vec<String>,
}

/// The ClickHouse adapter. Cheap to clone.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    db: String,
    retention: usize,
    dedup_check: bool,
    cluster: Option<String>,
    /// Cluster mode with shard URLs: a client per shard.
    shards: Vec<Client>,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("clickhouse: {e}"))
}

/// `t` as ClickHouse's `DateTime` (unsigned seconds, 1970-01-01 to
/// 2106-02-07): every time bound for a column or a `toDateTime` goes
/// through here, because the server silently wraps what does not fit (a
/// snapshot asked as of 1969 was stored as of 2106).
pub(super) fn datetime(what: &str, t: i64) -> Result<u32, StoreError> {
    u32::try_from(t).map_err(|_| {
        StoreError::OutOfRange(format!(
            "{what} {} is outside ClickHouse's DateTime range (1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z)",
            crate::domain::time::format_rfc3339(t)
        ))
    })
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
        let cluster = if options.cluster.is_empty() {
            None
        } else {
            // An insert through a Distributed table returns once every
            // shard stored its rows: a confirmed event is on its shard,
            // and the next read (a redelivery check, a build) sees it.
            client = client.with_setting("insert_distributed_sync", "1");
            Some(
                identifier(&options.cluster)
                    .map_err(unavailable)?
                    .to_string(),
            )
        };
        let shards = if cluster.is_some() {
            options
                .shard_urls
                .iter()
                .map(|u| client.clone().with_url(u))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            client,
            db,
            retention: options.snapshot_retention.max(1),
            dedup_check: options.dedup_check,
            cluster,
            shards,
        })
    }

    /// The cluster of cluster mode.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// ` ON CLUSTER <name>` in cluster mode, else nothing.
    pub(super) fn on_cluster(&self) -> String {
        self.cluster
            .as_ref()
            .map(|c| format!(" ON CLUSTER {c}"))
            .unwrap_or_default()
    }

    /// The table holding `table`'s rows on a server: `<table>_local` in
    /// cluster mode (the Distributed table is only a front).
    pub(super) fn storage_table(&self, table: &str) -> String {
        match self.cluster {
            Some(_) => format!("{table}_local"),
            None => table.to_string(),
        }
    }

    /// Where per-user aggregations run, with whether the SQL must name the
    /// local tables: each shard on its own rows (cluster mode with shard
    /// URLs), else the one client.
    pub(super) fn aggregation_clients(&self) -> (Vec<&Client>, bool) {
        if self.shards.is_empty() {
            (vec![&self.client], false)
        } else {
            (self.shards.iter().collect(), true)
        }
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

    /// What reads of every event name after `FROM`: the table, with
    /// `FINAL` when duplicates are removed on read. Through a Distributed
    /// table 18.16 applies `FINAL` only when the sorting-key columns are
    /// selected, so cluster mode reads every column in a subquery.
    pub(super) fn events_from(&self) -> String {
        match (&self.cluster, self.dedup()) {
            (Some(_), Dedup::OnRead) => format!("(SELECT * FROM {}.events FINAL)", self.db),
            (_, dedup) => format!("{}.events{}", self.db, dedup.final_keyword()),
        }
    }

    /// Rendered aggregation SQL for `clients` of [`Self::aggregation_clients`]:
    /// on the shards' local tables, or through the Distributed tables.
    pub(super) fn for_aggregation(&self, sql: String, local: bool) -> String {
        if local {
            sql::on_shard_tables(&sql, &self.db)
        } else if self.cluster.is_some() {
            sql::final_through_distributed(&sql, &self.db)
        } else {
            sql
        }
    }
}
