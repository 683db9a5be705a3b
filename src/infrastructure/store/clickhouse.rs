//! `ClickHouseStore`: events in `<db>.events`, features in
//! `<db>.user_features`, computed inside ClickHouse from the shared spec
//! (see [`super::clickhouse_sql`]). The HTTP layer never sees this type:
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

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::clickhouse_sql::{self, Dedup, identifier};
use crate::application::ports::{
    AppendOutcome, EventStats, EventStore, FeatureStore, LogPosition, PredictionSink, RejectTally,
    ScoredUser, SnapshotSummary, StoreError, TypeCount,
};
use crate::domain::event::Event;
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::model::Dataset;
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::{FeatureSnapshot, SnapshotHeader, retained};

/// The numbered DDL files, in order.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "001_events.sql",
        include_str!("../../../migrations/001_events.sql"),
    ),
    (
        2,
        "002_feature_snapshots.sql",
        include_str!("../../../migrations/002_feature_snapshots.sql"),
    ),
    (
        3,
        "003_user_features.sql",
        include_str!("../../../migrations/003_user_features.sql"),
    ),
    (
        4,
        "004_feature_vectors.sql",
        include_str!("../../../migrations/004_feature_vectors.sql"),
    ),
    (
        5,
        "005_predictions.sql",
        include_str!("../../../migrations/005_predictions.sql"),
    ),
    (
        6,
        "006_events_log_position.sql",
        include_str!("../../../migrations/006_events_log_position.sql"),
    ),
    (
        7,
        "007_log_ranges.sql",
        include_str!("../../../migrations/007_log_ranges.sql"),
    ),
    (
        8,
        "008_user_names.sql",
        include_str!("../../../migrations/008_user_names.sql"),
    ),
    (
        9,
        "009_reject_counts.sql",
        include_str!("../../../migrations/009_reject_counts.sql"),
    ),
    (
        10,
        "010_predictions_user_name.sql",
        include_str!("../../../migrations/010_predictions_user_name.sql"),
    ),
];

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

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("clickhouse: {e}"))
}

/// Rows borrow their strings from the events: an insert of a batch
/// allocates nothing per row.
#[derive(Debug, Row, Serialize)]
struct EventRow<'a> {
    user_id: u64,
    event_time: u32,
    event_id: i64,
    event_type: &'a str,
    session_id: Option<&'a str>,
    amount: Option<f64>,
}

/// An event read from a partitioned log, with its position (006).
#[derive(Debug, Row, Serialize)]
struct LoggedEventRow<'a> {
    user_id: u64,
    event_time: u32,
    event_id: i64,
    event_type: &'a str,
    session_id: Option<&'a str>,
    amount: Option<f64>,
    log_topic: &'a str,
    log_partition: i32,
    log_offset: i64,
}

/// One (topic, partition) offset range of a streamed batch (`log_ranges`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct LogRangeRow {
    topic: String,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    records: u64,
}

#[derive(Debug, Row, Deserialize)]
struct StoredPositionRow {
    log_partition: i32,
    log_offset: i64,
    event_id: i64,
}

#[derive(Debug, Row, Deserialize)]
struct StatsRow {
    events: u64,
    users: u64,
    first: u32,
    last: u32,
}

#[derive(Debug, Row, Deserialize)]
struct TypeCountRow {
    event_type: String,
    events: u64,
    users: u64,
    with_amount: u64,
    with_session: u64,
    with_negative_amount: u64,
    positive_amount_sum: f64,
    negative_amount_sum: f64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct NameRow {
    user_key: u64,
    name: String,
}

#[derive(Debug, Row, Serialize)]
struct RejectRow<'a> {
    source: &'a str,
    field: &'a str,
    count: u64,
    example: &'a str,
}

#[derive(Debug, Row, Deserialize)]
struct RejectTallyRow {
    source: String,
    field: String,
    count: u64,
    example: String,
}

/// Keys per `IN` list of a name lookup (18.16 parses each literal at
/// about 8 µs, and caps a query's syntax tree at 50,000 elements).
const KEYS_PER_LOOKUP: usize = 20_000;

#[derive(Debug, Row, Deserialize)]
struct HeaderRow {
    as_of: u32,
    created_at: u32,
    fingerprint: String,
    feature_names: String,
    users: u64,
}

#[derive(Debug, Row, Deserialize)]
struct FeatureRow {
    user_id: u64,
    features: Vec<f32>,
}

#[derive(Debug, Row, Deserialize)]
struct LabelledRow {
    user_id: u64,
    features: Vec<f64>,
    churned: u8,
}

#[derive(Debug, Row, Deserialize)]
struct AppliedRow {
    version: u32,
    checksum: String,
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

    /// Creates the database and applies every migration not yet recorded.
    /// A recorded migration whose file changed is an error, not a re-run.
    ///
    /// # Errors
    /// [`StoreError`] when the server is unreachable, a DDL fails or a file
    /// was edited after being applied.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let db = &self.db;
        self.client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
            .execute()
            .await
            .map_err(unavailable)?;
        self.client
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
                 (version UInt32, name String, checksum String, applied_at DateTime DEFAULT now()) \
                 ENGINE = MergeTree ORDER BY version"
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
            self.client
                .query(&migration_ddl(sql, db))
                .execute()
                .await
                .map_err(|e| unavailable(format!("{name}: {e}")))?;
            self.client
                .query(&format!(
                    "INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES ({version}, {}, {})",
                    clickhouse_sql::quote(name),
                    clickhouse_sql::quote(&checksum)
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
            .query(&format!("DROP DATABASE IF EXISTS {}", self.db))
            .execute()
            .await
            .map_err(unavailable)
    }

    /// Where this store removes redeliveries (`dedup_check`).
    pub fn dedup(&self) -> Dedup {
        if self.dedup_check {
            Dedup::OnWrite
        } else {
            Dedup::OnRead
        }
    }

    fn events_final(&self) -> &'static str {
        self.dedup().final_keyword()
    }

    /// The `log_ranges` rows overlapping this batch's offset ranges: the
    /// batches begun before whose records this one may repeat.
    async fn begun_ranges(
        &self,
        ranges: &BTreeMap<(String, i32), LogRangeRow>,
    ) -> Result<Vec<LogRangeRow>, StoreError> {
        let overlaps: Vec<String> = ranges
            .values()
            .map(|r| {
                format!(
                    "(topic = {} AND partition = {} AND first_offset <= {} AND last_offset >= {})",
                    clickhouse_sql::quote(&r.topic),
                    r.partition,
                    r.last_offset,
                    r.first_offset
                )
            })
            .collect();
        self.client
            .query(&format!(
                "SELECT topic, partition, first_offset, last_offset, records FROM {}.log_ranges WHERE {}",
                self.db,
                overlaps.join(" OR ")
            ))
            .fetch_all()
            .await
            .map_err(unavailable)
    }

    /// Of `suspects` (records in ranges begun before), those already
    /// stored: same topic, partition and offset *and* the same event id (a
    /// recreated topic reuses offsets for other events). The batch's time
    /// range prunes the scan to its months: a redelivered record carries
    /// the same event time as its stored copy.
    async fn stored_positions(
        &self,
        suspects: &[(&Event, &LogPosition)],
    ) -> Result<HashSet<(String, i32, i64)>, StoreError> {
        let mut by_topic: BTreeMap<&str, Vec<&(&Event, &LogPosition)>> = BTreeMap::new();
        for s in suspects {
            by_topic.entry(s.1.topic.as_str()).or_default().push(s);
        }
        let mut stored = HashSet::new();
        for (topic, records) in by_topic {
            let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
            for (_, p) in &records {
                let span = spans.entry(p.partition).or_insert((p.offset, p.offset));
                *span = (span.0.min(p.offset), span.1.max(p.offset));
            }
            let first = records
                .iter()
                .map(|(e, _)| e.event_time())
                .min()
                .unwrap_or(0);
            let last = records
                .iter()
                .map(|(e, _)| e.event_time())
                .max()
                .unwrap_or(0);
            let spans: Vec<String> = spans
                .iter()
                .map(|(partition, (lo, hi))| {
                    format!("(log_partition = {partition} AND log_offset >= {lo} AND log_offset <= {hi})")
                })
                .collect();
            let rows: Vec<StoredPositionRow> = self
                .client
                .query(&format!(
                    "SELECT log_partition, log_offset, event_id FROM {}.events \
                     WHERE event_time >= toDateTime({first}) AND event_time <= toDateTime({last}) \
                     AND log_topic = {} AND ({})",
                    self.db,
                    clickhouse_sql::quote(topic),
                    spans.join(" OR ")
                ))
                .fetch_all()
                .await
                .map_err(unavailable)?;
            let ids: HashSet<(i32, i64, i64)> = rows
                .into_iter()
                .map(|r| (r.log_partition, r.log_offset, r.event_id))
                .collect();
            for (e, p) in records {
                if ids.contains(&(p.partition, p.offset, e.event_id())) {
                    stored.insert((p.topic.clone(), p.partition, p.offset));
                }
            }
        }
        Ok(stored)
    }

    /// Event ids of `events` that are already stored, checked in slices
    /// of 20,000 events.
    ///
    /// Why no list of the batch's ids in the query: ClickHouse parses each
    /// literal of an `IN` list (about 8 µs an id on this machine, and
    /// 18.16 caps a query's syntax tree at 50,000 elements), which made the
    /// check ten times the insert. Instead the query names the slice's
    /// users and its time span and returns the ids stored there; the
    /// client intersects. user_id leads the sort key and event_time the
    /// partition key, so it reads only those users' granules in the
    /// slice's months. New data (the steady state) returns nothing and a
    /// redelivered slice its own ids. What else could come back (a
    /// shuffled file: every user's whole stored history) is capped: past
    /// [`STORED_IDS_PER_SLICE`] the slice is checked by its ids instead.
    async fn existing_ids(&self, events: &[Event]) -> Result<HashSet<i64>, StoreError> {
        let mut found = HashSet::new();
        for slice in events.chunks(EVENTS_PER_CHECK) {
            let mut users: Vec<u64> = slice.iter().map(Event::user_id).collect();
            users.sort_unstable();
            users.dedup();
            let users: Vec<String> = users.iter().map(u64::to_string).collect();
            let first = slice.iter().map(Event::event_time).min().unwrap_or(0);
            let last = slice.iter().map(Event::event_time).max().unwrap_or(0);
            let scope = format!(
                "FROM {}.events WHERE user_id IN ({}) \
                 AND event_time >= toDateTime({first}) AND event_time <= toDateTime({last})",
                self.db,
                users.join(",")
            );
            let rows: Vec<i64> = self
                .client
                .query(&format!(
                    "SELECT event_id {scope} LIMIT {}",
                    STORED_IDS_PER_SLICE + 1
                ))
                .fetch_all()
                .await
                .map_err(unavailable)?;
            if rows.len() <= STORED_IDS_PER_SLICE {
                found.extend(rows);
                continue;
            }
            let ids: Vec<String> = slice.iter().map(|e| e.event_id().to_string()).collect();
            let rows: Vec<i64> = self
                .client
                .query(&format!(
                    "SELECT event_id {scope} AND event_id IN ({})",
                    ids.join(",")
                ))
                .fetch_all()
                .await
                .map_err(unavailable)?;
            found.extend(rows);
        }
        Ok(found)
    }
}

impl ClickHouseStore {
    /// The stored names of up to [`KEYS_PER_LOOKUP`] keys.
    async fn names_of(
        &self,
        keys: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, StoreError> {
        if keys.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let list: Vec<String> = keys.iter().map(u64::to_string).collect();
        let rows: Vec<NameRow> = self
            .client
            .query(&format!(
                "SELECT user_key, any(name) AS name FROM {}.user_names WHERE user_key IN ({}) GROUP BY user_key",
                self.db,
                list.join(",")
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| (r.user_key, r.name)).collect())
    }
}

/// Events per redelivery check query (file, HTTP and generator batches).
const EVENTS_PER_CHECK: usize = 20_000;

/// Stored ids one check may bring back before the slice is checked by its
/// own ids instead: bounds the client's memory (about 1 MB) whatever the
/// batch's shape.
pub const STORED_IDS_PER_SLICE: usize = 4 * EVENTS_PER_CHECK;

#[derive(Debug, Row, Serialize)]
struct PredictionRow<'a> {
    features_as_of: u32,
    model_version: u64,
    user_id: u64,
    scored_at: u32,
    churn_probability: f64,
    raw_probability: f64,
    reasons: String,
    user_name: &'a str,
}

fn datetime(what: &str, t: i64) -> Result<u32, StoreError> {
    u32::try_from(t).map_err(|_| StoreError::Corrupt(format!("{what} {t} outside DateTime")))
}

#[async_trait]
impl PredictionSink for ClickHouseStore {
    async fn write(&self, scored_at: i64, rows: &[ScoredUser]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let scored_at = datetime("scored_at", scored_at)?;
        let mut insert = self
            .client
            .insert_unescaped::<PredictionRow>(&format!("{}.predictions", self.db))
            .await
            .map_err(unavailable)?;
        for r in rows {
            let as_of =
                crate::domain::time::parse_timestamp(&r.features_as_of).ok_or_else(|| {
                    StoreError::Corrupt(format!("features_as_of {:?}", r.features_as_of))
                })?;
            insert
                .write(&PredictionRow {
                    features_as_of: datetime("features_as_of", as_of)?,
                    model_version: r.model_version,
                    user_id: r.user_id.key(),
                    scored_at,
                    churn_probability: r.churn_probability,
                    raw_probability: r.raw_probability,
                    reasons: serde_json::to_string(&r.reasons)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    user_name: r.user_id.as_name().unwrap_or_default(),
                })
                .await
                .map_err(unavailable)?;
        }
        insert.end().await.map_err(unavailable)?;
        Ok(rows.len() as u64)
    }
}

#[async_trait]
impl EventStore for ClickHouseStore {
    async fn append(&self, events: Vec<Event>) -> Result<AppendOutcome, StoreError> {
        let total = events.len() as u64;
        if events.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let existing = if self.dedup_check {
            self.existing_ids(&events).await?
        } else {
            HashSet::new()
        };
        let mut seen = HashSet::with_capacity(events.len());
        let mut insert = self
            .client
            .insert_unescaped::<EventRow<'_>>(&format!("{}.events", self.db))
            .await
            .map_err(unavailable)?;
        let mut inserted = 0u64;
        for e in &events {
            let id = e.event_id();
            if existing.contains(&id) || !seen.insert(id) {
                continue;
            }
            let row = EventRow {
                user_id: e.user_id(),
                event_time: u32::try_from(e.event_time()).map_err(|_| {
                    StoreError::Corrupt(format!("event_time {} outside DateTime", e.event_time()))
                })?,
                event_id: id,
                event_type: e.event_type(),
                session_id: e.session_id(),
                amount: e.amount(),
            };
            insert.write(&row).await.map_err(unavailable)?;
            inserted += 1;
        }
        insert.end().await.map_err(unavailable)?;
        Ok(AppendOutcome {
            inserted,
            duplicates: total - inserted,
        })
    }

    /// Streamed batches: a redelivery is recognised by position, not by
    /// event id. Steady state costs one lookup in the small `log_ranges`
    /// ledger and one ledger insert; only a batch overlapping a range begun
    /// before (after a crash, a lost insert response, a rebalance) reads
    /// positions back from `events`. The ledger row goes in *before* the
    /// events, so a write that fails half way is always looked up on retry.
    async fn append_from_log(
        &self,
        events: &[Event],
        positions: &[LogPosition],
    ) -> Result<AppendOutcome, StoreError> {
        if positions.len() != events.len() {
            return self.append(events.to_vec()).await;
        }
        let total = events.len() as u64;
        if events.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let mut ranges: BTreeMap<(String, i32), LogRangeRow> = BTreeMap::new();
        for p in positions {
            let r = ranges
                .entry((p.topic.clone(), p.partition))
                .or_insert_with(|| LogRangeRow {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    first_offset: p.offset,
                    last_offset: p.offset,
                    records: 0,
                });
            r.first_offset = r.first_offset.min(p.offset);
            r.last_offset = r.last_offset.max(p.offset);
            r.records += 1;
        }
        let stored = if self.dedup_check {
            let begun = self.begun_ranges(&ranges).await?;
            let suspects: Vec<(&Event, &LogPosition)> = events
                .iter()
                .zip(positions)
                .filter(|(_, p)| {
                    begun.iter().any(|r| {
                        r.topic == p.topic
                            && r.partition == p.partition
                            && (r.first_offset..=r.last_offset).contains(&p.offset)
                    })
                })
                .collect();
            if suspects.is_empty() {
                HashSet::new()
            } else {
                metrics::counter!(crate::telemetry::names::STORE_REDELIVERY_LOOKUPS_TOTAL)
                    .increment(1);
                self.stored_positions(&suspects).await?
            }
        } else {
            HashSet::new()
        };
        // A producer's event id is the identity wherever it comes from: the
        // same id in another message is a redelivery the positions cannot
        // show, so those events are also looked up by id.
        let supplied: Vec<Event> = events
            .iter()
            .filter(|e| e.has_supplied_id())
            .cloned()
            .collect();
        let supplied_stored = if self.dedup_check && !supplied.is_empty() {
            self.existing_ids(&supplied).await?
        } else {
            HashSet::new()
        };
        let mut ledger = self
            .client
            .insert_unescaped::<LogRangeRow>(&format!("{}.log_ranges", self.db))
            .await
            .map_err(unavailable)?;
        for r in ranges.values() {
            ledger.write(r).await.map_err(unavailable)?;
        }
        ledger.end().await.map_err(unavailable)?;

        let mut seen = HashSet::with_capacity(events.len());
        let mut insert = self
            .client
            .insert_unescaped::<LoggedEventRow<'_>>(&format!("{}.events", self.db))
            .await
            .map_err(unavailable)?;
        let mut inserted = 0u64;
        for (e, p) in events.iter().zip(positions) {
            let id = e.event_id();
            if (!stored.is_empty() && stored.contains(&(p.topic.clone(), p.partition, p.offset)))
                || (e.has_supplied_id() && supplied_stored.contains(&id))
                || !seen.insert(id)
            {
                continue;
            }
            let row = LoggedEventRow {
                user_id: e.user_id(),
                event_time: datetime("event_time", e.event_time())?,
                event_id: id,
                event_type: e.event_type(),
                session_id: e.session_id(),
                amount: e.amount(),
                log_topic: &p.topic,
                log_partition: p.partition,
                log_offset: p.offset,
            };
            insert.write(&row).await.map_err(unavailable)?;
            inserted += 1;
        }
        insert.end().await.map_err(unavailable)?;
        Ok(AppendOutcome {
            inserted,
            duplicates: total - inserted,
        })
    }

    async fn stats(&self) -> Result<EventStats, StoreError> {
        let row: StatsRow = self
            .client
            .query(&format!(
                "SELECT count() AS events, uniqExact(user_id) AS users, \
                 toUInt32(min(event_time)) AS first, toUInt32(max(event_time)) AS last \
                 FROM {}.events{}",
                self.db,
                self.events_final()
            ))
            .fetch_one()
            .await
            .map_err(unavailable)?;
        let any = row.events > 0;
        Ok(EventStats {
            events: row.events,
            users: row.users,
            first_event_time: any.then_some(i64::from(row.first)),
            last_event_time: any.then_some(i64::from(row.last)),
        })
    }

    async fn type_counts(&self) -> Result<Vec<TypeCount>, StoreError> {
        let rows: Vec<TypeCountRow> = self
            .client
            .query(&format!(
                "SELECT event_type, count() AS events, uniqExact(user_id) AS users, \
                 count(amount) AS with_amount, count(session_id) AS with_session, \
                 countIf(ifNull(amount, 0.) < 0) AS with_negative_amount, \
                 sumIf(ifNull(amount, 0.), ifNull(amount, 0.) > 0) AS positive_amount_sum, \
                 sumIf(ifNull(amount, 0.), ifNull(amount, 0.) < 0) AS negative_amount_sum \
                 FROM {}.events{} GROUP BY event_type ORDER BY events DESC, event_type",
                self.db,
                self.events_final()
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| TypeCount {
                event_type: r.event_type,
                events: r.events,
                users: r.users,
                with_amount: r.with_amount,
                with_session: r.with_session,
                with_negative_amount: r.with_negative_amount,
                positive_amount_sum: r.positive_amount_sum,
                negative_amount_sum: r.negative_amount_sum,
            })
            .collect())
    }

    async fn register_names(&self, names: &[(u64, &str)]) -> Result<Vec<u64>, StoreError> {
        let mut collided = Vec::new();
        for chunk in names.chunks(KEYS_PER_LOOKUP) {
            let keys: Vec<u64> = chunk.iter().map(|(k, _)| *k).collect();
            let held = self.names_of(&keys).await?;
            let mut insert: Option<clickhouse::insert::Insert<NameRow>> = None;
            for (key, name) in chunk {
                match held.get(key) {
                    Some(h) if h != name => collided.push(*key),
                    Some(_) => {}
                    None => {
                        if insert.is_none() {
                            insert = Some(
                                self.client
                                    .insert_unescaped::<NameRow>(&format!("{}.user_names", self.db))
                                    .await
                                    .map_err(unavailable)?,
                            );
                        }
                        if let Some(ins) = insert.as_mut() {
                            ins.write(&NameRow {
                                user_key: *key,
                                name: (*name).to_string(),
                            })
                            .await
                            .map_err(unavailable)?;
                        }
                    }
                }
            }
            if let Some(ins) = insert {
                ins.end().await.map_err(unavailable)?;
            }
        }
        Ok(collided)
    }

    async fn user_names(
        &self,
        keys: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, StoreError> {
        let keys: Vec<u64> = keys
            .iter()
            .copied()
            .filter(|k| crate::domain::user::is_name_key(*k))
            .collect();
        let mut out = std::collections::HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_LOOKUP) {
            out.extend(self.names_of(chunk).await?);
        }
        Ok(out)
    }

    async fn record_rejects(&self, tallies: &[RejectTally]) -> Result<(), StoreError> {
        if tallies.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert_unescaped::<RejectRow<'_>>(&format!("{}.reject_counts", self.db))
            .await
            .map_err(unavailable)?;
        for t in tallies {
            insert
                .write(&RejectRow {
                    source: &t.source,
                    field: &t.field,
                    count: t.count,
                    example: &t.example,
                })
                .await
                .map_err(unavailable)?;
        }
        insert.end().await.map_err(unavailable)
    }

    async fn reject_tallies(&self) -> Result<Vec<RejectTally>, StoreError> {
        let rows: Vec<RejectTallyRow> = self
            .client
            .query(&format!(
                "SELECT source, field, sum(count) AS count, any(example) AS example \
                 FROM {}.reject_counts GROUP BY source, field ORDER BY count DESC, source, field",
                self.db
            ))
            .fetch_all()
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| RejectTally {
                source: r.source,
                field: r.field,
                count: r.count,
                example: r.example,
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .query("SELECT 1")
            .execute()
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl FeatureStore for ClickHouseStore {
    async fn build_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<SnapshotSummary, StoreError> {
        let db = &self.db;
        let sql =
            clickhouse_sql::build_snapshot(spec, db, self.dedup(), as_of).map_err(unavailable)?;
        self.client
            .query(&sql)
            .execute()
            .await
            .map_err(unavailable)?;
        let users: u64 = self
            .client
            .query(&format!(
                "SELECT count() FROM {db}.feature_vectors FINAL WHERE fingerprint = {} AND as_of = toDateTime({as_of})",
                clickhouse_sql::quote(&spec.fingerprint())
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
                clickhouse_sql::quote(&header.fingerprint),
                clickhouse_sql::quote(&header.names_json())
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
        let sql = clickhouse_sql::compute_snapshot(spec, &self.db, self.dedup(), as_of)
            .map_err(unavailable)?;
        let mut snapshot = FeatureSnapshot::new(
            as_of,
            chrono::Utc::now().timestamp(),
            spec.names(),
            spec.fingerprint(),
        );
        let mut cursor = self
            .client
            .query(&sql)
            .fetch::<FeatureRow>()
            .map_err(unavailable)?;
        while let Some(row) = cursor.next().await.map_err(unavailable)? {
            snapshot.insert_stored(row.user_id, &row.features)?;
        }
        Ok(snapshot)
    }

    async fn latest_snapshot(&self) -> Result<Option<FeatureSnapshot>, StoreError> {
        let db = &self.db;
        let Some(header) = self.headers(1).await?.into_iter().next() else {
            return Ok(None);
        };
        let mut snapshot = header.empty_snapshot();
        // Stored as Float32: read as such, no widening on the way.
        let mut cursor = self
            .client
            .query(&format!(
                "SELECT user_id, feature_values AS features FROM {db}.feature_vectors FINAL \
                 WHERE fingerprint = {} AND as_of = toDateTime({})",
                clickhouse_sql::quote(&header.fingerprint),
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
            .headers(u64::MAX)
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
        let sql =
            clickhouse_sql::training_set(spec, &self.db, self.dedup(), policy, cutoff, sample)
                .map_err(unavailable)?;
        // Streamed row by row into the flat set: collecting the rows first
        // held every row twice (a boxed vector each, then the copy), a
        // quarter of `churn train`'s peak memory at 1M users.
        let mut cursor = self
            .client
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
        Ok(data)
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
        for table in ["feature_vectors", "feature_snapshots"] {
            self.client
                .query(&format!(
                    "ALTER TABLE {db}.{table} DELETE WHERE as_of < toDateTime({oldest_kept})"
                ))
                .execute()
                .await
                .map_err(unavailable)?;
        }
        // Mutations are asynchronous (18.16 has no `mutations_sync`).
        for _ in 0..100 {
            let pending: u64 = self
                .client
                .query(&format!(
                    "SELECT count() FROM system.mutations WHERE database = {} AND is_done = 0 \
                     AND table IN ('feature_vectors', 'feature_snapshots')",
                    clickhouse_sql::quote(db)
                ))
                .fetch_one()
                .await
                .map_err(unavailable)?;
            if pending == 0 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(StoreError::Unavailable(
            "old snapshots still being deleted after 10 s".into(),
        ))
    }
}
