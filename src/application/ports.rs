//! The ports: traits the use cases depend on and the infrastructure
//! implements (embedded SQLite and ClickHouse stores, object-store registry,
//! file and Kafka event sources, model trainers).
//!
//! Errors are per port, with variants a caller can act on.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::event::{Event, EventError};
use crate::domain::features::{FeatureSpec, UserEvent};
use crate::domain::label::LabelPolicy;
use crate::domain::lease::{Lease, TickClaim};
use crate::domain::model::{Classifier, Dataset, ModelError, ModelKind, ModelMetadata};
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::FeatureSnapshot;

/// Failures of the event/feature store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the operation; retrying
    /// later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The stored data is not what this version expects.
    #[error("store data is invalid: {0}")]
    Corrupt(String),
    /// The request cannot be answered from the data there is.
    #[error("{0}")]
    Insufficient(String),
    /// A value the store's column cannot hold (a time before 1970 or after
    /// 2106 for ClickHouse's `DateTime`): refused, never wrapped.
    #[error("{0}")]
    OutOfRange(String),
}

impl From<crate::domain::snapshot::SnapshotError> for StoreError {
    fn from(e: crate::domain::snapshot::SnapshotError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// What one append did: idempotent stores count redeliveries separately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppendOutcome {
    pub inserted: u64,
    pub duplicates: u64,
}

/// Size and time range of the stored events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventStats {
    pub events: u64,
    pub users: u64,
    pub first_event_time: Option<i64>,
    pub last_event_time: Option<i64>,
}

/// How many events of one type the store holds, how many of them carry
/// an amount / a session, and how much of the amounts is negative (refunds,
/// cancellations): what `churn features suggest` and `churn profile` read.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TypeCount {
    pub event_type: String,
    pub events: u64,
    pub users: u64,
    pub with_amount: u64,
    pub with_session: u64,
    /// Events with an amount below zero.
    pub with_negative_amount: u64,
    /// Sum of the positive amounts.
    pub positive_amount_sum: f64,
    /// Sum of the negative amounts (a negative number, or 0).
    pub negative_amount_sum: f64,
}

/// Rejected records of one source and field, with one example: what
/// `churn stats` lists, over every run and driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectTally {
    /// `file`, `stdin`, `http`, `kafka` or `generator`.
    pub source: String,
    /// The field at fault (`json` for unparsable input).
    pub field: String,
    pub count: u64,
    /// One reason, with where it came from.
    pub example: String,
}

/// Where raw events are kept. Appends must be idempotent on
/// [`Event::event_id`]: the same event appended twice is stored once.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Durably appends a batch (all or nothing).
    async fn append(&self, events: Vec<Event>) -> Result<AppendOutcome, StoreError>;
    /// Appends events read from a partitioned log, `positions[i]` being
    /// where `events[i]` was read (same length). A store may recognise a
    /// redelivered record by its position, which is far cheaper than
    /// looking its event id up; the default ignores the positions (the
    /// store is idempotent on event ids anyway). Borrowed: the caller keeps
    /// the batch to retry it, and a store that writes from references
    /// copies nothing.
    async fn append_from_log(
        &self,
        events: &[Event],
        positions: &[LogPosition],
    ) -> Result<AppendOutcome, StoreError> {
        let _ = positions;
        self.append(events.to_vec()).await
    }
    async fn stats(&self) -> Result<EventStats, StoreError>;
    /// Events per type, most frequent first.
    async fn type_counts(&self) -> Result<Vec<TypeCount>, StoreError>;
    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Keeps the names of name-keyed users (string ids, see
    /// [`crate::domain::user`]) beside their keys, before their events are
    /// appended. Returns the keys already held by a *different* name (a
    /// 62-bit collision): those events must not be stored under that key.
    async fn register_names(&self, names: &[(u64, &str)]) -> Result<Vec<u64>, StoreError>;
    /// The names of the given name keys that the store holds.
    async fn user_names(
        &self,
        keys: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, StoreError>;
    /// Adds rejected-record counts (per source and field) to the store's
    /// running totals.
    async fn record_rejects(&self, tallies: &[RejectTally]) -> Result<(), StoreError>;
    /// The running totals of rejected records, most frequent first.
    async fn reject_tallies(&self) -> Result<Vec<RejectTally>, StoreError>;
}

/// What erasing users removed from a store, by kind of row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ErasedRows {
    pub events: u64,
    /// Rows of stored feature snapshots.
    pub feature_rows: u64,
    /// Rows of the batch-score table (ClickHouse `predictions`).
    pub predictions: u64,
    /// Names of string-id users.
    pub names: u64,
}

/// Removing user data on request (erasure) and by age (retention), from
/// every table a store keeps: events, feature rows, scores, names.
#[async_trait]
pub trait Erasure: Send + Sync {
    /// Removes every row of `users` (keys) and returns what was removed;
    /// when it returns, no read of the store sees them.
    async fn forget_users(&self, users: &[u64]) -> Result<ErasedRows, StoreError>;
    /// Removes events older than `before` (seconds); returns how many.
    async fn drop_events_before(&self, before: i64) -> Result<u64, StoreError>;
}

/// Summary of a persisted feature snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SnapshotSummary {
    pub as_of: i64,
    pub users: u64,
    pub features: usize,
    pub fingerprint: String,
}

impl From<crate::domain::snapshot::SnapshotHeader> for SnapshotSummary {
    fn from(h: crate::domain::snapshot::SnapshotHeader) -> Self {
        Self {
            as_of: h.as_of,
            users: h.users,
            features: h.feature_names.len(),
            fingerprint: h.fingerprint,
        }
    }
}

/// Computes features from stored events with the shared spec, persists dated
/// snapshots and builds point-in-time training sets.
///
/// Every adapter keeps the newest `retention` snapshots (rows and headers,
/// [`crate::domain::snapshot::retained`]); a snapshot becomes visible when
/// its header is written, after its rows.
#[async_trait]
pub trait FeatureStore: Send + Sync {
    /// Computes every user's features as of `as_of` (events `<= as_of` only)
    /// and stores them as a snapshot, replacing one with the same `as_of`.
    async fn build_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<SnapshotSummary, StoreError>;
    /// Every user's features as of `as_of`, computed like a snapshot but
    /// not stored (profiles, ad-hoc scoring).
    async fn compute_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<FeatureSnapshot, StoreError>;
    /// The newest stored snapshot as of `not_after` or earlier (`None`: the
    /// newest of all), loaded for serving and scoring.
    async fn latest_snapshot(
        &self,
        not_after: Option<i64>,
    ) -> Result<Option<FeatureSnapshot>, StoreError>;
    /// The stored snapshots' summaries, newest first.
    async fn snapshots(&self) -> Result<Vec<SnapshotSummary>, StoreError>;
    /// One user's events, in time order (as a snapshot build reads them),
    /// in the spec's compact form: what live features are evaluated from.
    /// `None` when the user holds more than `limit` events (reading them
    /// on a request would cost more than a client may cause).
    async fn user_events(
        &self,
        spec: &FeatureSpec,
        user: u64,
        limit: usize,
    ) -> Result<Option<Vec<UserEvent>>, StoreError>;
    /// Features as of `cutoff` and churn labels over `(cutoff, cutoff + H]`
    /// for users eligible at `cutoff` and kept by `sample`, ordered by user
    /// id. The sample is applied before features are computed, so a capped
    /// set costs the store about its share of the work.
    async fn training_set(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cutoff: i64,
        sample: RowSample,
    ) -> Result<Dataset, StoreError>;
    /// [`FeatureStore::training_set`] at each `(cutoff, sample)`, in that
    /// order, and with `snapshot_at` also what
    /// [`FeatureStore::compute_snapshot`] gives at that time: everything a
    /// training run reads. Stores that read every user's history anyway
    /// override it to read it once for all of them.
    async fn training_sets(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cuts: &[(i64, RowSample)],
        snapshot_at: Option<i64>,
    ) -> Result<TrainingRead, StoreError> {
        let mut sets = Vec::with_capacity(cuts.len());
        for &(cutoff, sample) in cuts {
            sets.push(self.training_set(spec, policy, cutoff, sample).await?);
        }
        let snapshot = match snapshot_at {
            Some(t) => Some(self.compute_snapshot(spec, t).await),
            None => None,
        };
        Ok(TrainingRead { sets, snapshot })
    }
}

/// What [`FeatureStore::training_sets`] read.
#[derive(Debug, Default)]
pub struct TrainingRead {
    /// One set per cutoff asked, in that order.
    pub sets: Vec<Dataset>,
    /// Every user's features at `snapshot_at`, when asked; its failure
    /// alone does not fail the sets (it only feeds monitoring).
    pub snapshot: Option<Result<FeatureSnapshot, StoreError>>,
}

/// Failures of the model registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model version {0} does not exist")]
    UnknownVersion(u64),
    #[error("no model has alias {0:?}")]
    NoAlias(String),
    #[error("checksum mismatch for version {version}: expected {expected}, found {found}")]
    Checksum {
        version: u64,
        expected: String,
        found: String,
    },
    /// A conditional alias move lost a race with another writer.
    #[error("alias {alias:?} was moved concurrently by another writer; re-read and retry")]
    Conflict { alias: String },
    /// A scheduled job's write under a lease token older than one already
    /// recorded: another replica has led since.
    #[error("write fenced off: lease token {token} is older than {newest}")]
    Fenced { token: u64, newest: u64 },
    #[error("nothing to roll back to: {0}")]
    NoHistory(String),
    #[error("registry backend error: {0}")]
    Backend(String),
    #[error("registry data is invalid: {0}")]
    Corrupt(String),
}

/// Where an alias points, with the versions it pointed to before (most
/// recent last) so rollback can walk back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AliasRecord {
    pub version: u64,
    #[serde(default)]
    pub history: Vec<u64>,
    pub updated_at: String,
    #[serde(default)]
    pub reason: String,
    /// The newest lease token of a scheduled job that moved this alias
    /// (kept across manual moves); an older token may not move it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

/// Immutable model versions plus movable aliases (`production`, `latest`).
#[async_trait]
pub trait ModelRegistry: Send + Sync {
    /// Stores a new version; the registry assigns the number (written into
    /// the returned metadata together with the checksum).
    async fn register(
        &self,
        metadata: ModelMetadata,
        model: Vec<u8>,
    ) -> Result<ModelMetadata, RegistryError>;
    /// All versions, oldest first.
    async fn list(&self) -> Result<Vec<ModelMetadata>, RegistryError>;
    /// One version's metadata and model bytes, checksum verified.
    async fn load(&self, version: u64) -> Result<(ModelMetadata, Vec<u8>), RegistryError>;
    async fn alias(&self, alias: &str) -> Result<Option<AliasRecord>, RegistryError>;
    /// Moves `alias` to `record.version` if the alias still is `expected`
    /// (`None` = must not exist); otherwise [`RegistryError::Conflict`].
    async fn set_alias(
        &self,
        alias: &str,
        record: AliasRecord,
        expected: Option<&AliasRecord>,
    ) -> Result<(), RegistryError>;
    async fn ping(&self) -> Result<(), RegistryError>;
    /// Removes `users` (keys) from every version's metadata (the drift
    /// reference's user sample): the one rewrite of a version's metadata,
    /// for erasure. Returns how many versions were rewritten.
    async fn forget_users(&self, users: &[u64]) -> Result<usize, RegistryError> {
        let _ = users;
        Ok(0)
    }
    /// Replaces `alias` only if its stored record is unreadable (a torn or
    /// tampered file): the one way to repair it, since a compare-and-swap
    /// needs the record it compares with. [`RegistryError::Conflict`] when
    /// the record is readable or absent.
    async fn repair_alias(&self, alias: &str, record: AliasRecord) -> Result<(), RegistryError> {
        let _ = record;
        Err(RegistryError::Conflict {
            alias: alias.to_string(),
        })
    }
    /// A cheap fingerprint of the alias record (an ETag, a modification
    /// time), for polling: it changes whenever the alias moves. The default
    /// reads the whole record.
    async fn alias_stamp(&self, alias: &str) -> Result<Option<String>, RegistryError> {
        Ok(self
            .alias(alias)
            .await?
            .map(|a| format!("{}:{}:{}", a.version, a.updated_at, a.history.len())))
    }
}

/// What replicas share to coordinate the schedule: the leader lease and
/// the claimed ticks. Kept where every replica already reads and writes
/// (the registry), moved by the same compare-and-swap as the aliases.
#[async_trait]
pub trait Coordination: Send + Sync {
    async fn lease(&self, name: &str) -> Result<Option<Lease>, RegistryError>;
    /// Writes `lease` if the stored one still equals `expected` (`None` =
    /// none stored); otherwise [`RegistryError::Conflict`].
    async fn swap_lease(
        &self,
        name: &str,
        lease: &Lease,
        expected: Option<&Lease>,
    ) -> Result<(), RegistryError>;
    /// Records `claim` unless its job's tick was claimed already (then
    /// `false`): create-if-absent, so one replica wins each tick.
    async fn claim_tick(&self, claim: &TickClaim) -> Result<bool, RegistryError>;
    /// Every claim of `job`, oldest tick first.
    async fn ticks(&self, job: &str) -> Result<Vec<TickClaim>, RegistryError>;
    /// Deletes `job`'s claims of ticks before `before` (they only guard
    /// ticks that can no longer fire); returns how many.
    async fn forget_ticks(&self, job: &str, before: i64) -> Result<usize, RegistryError>;
}

/// Failures of an external model exporter (MLflow). Never fatal to
/// training or promotion: reported and counted.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Rejected(String),
}

/// Mirrors registered versions and alias moves to an external tracking
/// system. Our registry stays the source of truth.
#[async_trait]
pub trait ModelExporter: Send + Sync {
    /// Records a newly registered version (run, params, metrics, artifacts,
    /// model version); returns a human-readable receipt.
    async fn export_version(
        &self,
        metadata: &crate::domain::model::ModelMetadata,
        model: &[u8],
    ) -> Result<String, ExportError>;
    /// Points `alias` at the exported counterpart of `version`.
    async fn set_alias(&self, alias: &str, version: u64) -> Result<(), ExportError>;
}

/// Fits and decodes models (CPU-bound: callers run it off the async runtime).
pub trait ModelTrainer: Send + Sync {
    /// # Errors
    /// [`ModelError::Training`] when the algorithm fails on the data.
    fn train(&self, kind: ModelKind, data: &Dataset) -> Result<Arc<dyn Classifier>, ModelError>;
    /// # Errors
    /// [`ModelError::Codec`] when the bytes are not a model of that kind.
    fn decode(&self, kind: ModelKind, bytes: &[u8]) -> Result<Arc<dyn Classifier>, ModelError>;
    /// The hyperparameters used for `kind`, recorded in the metadata.
    fn hyperparameters(&self, kind: ModelKind) -> serde_json::Value;
}

/// One undecoded message from a source, with where it came from (file line,
/// Kafka partition/offset) for dead-letter reports.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub payload: Vec<u8>,
    /// Human-readable origin (`file.ndjson:12`, `events/0@1234`).
    pub origin: String,
    /// Where the record sits in a partitioned log, for dead-letter headers.
    pub position: Option<LogPosition>,
    /// The message key, kept so a dead letter can be re-produced as it came.
    pub key: Option<Vec<u8>>,
}

impl RawRecord {
    /// A record with no log position or key (files, HTTP bodies).
    pub fn new(payload: Vec<u8>, origin: impl Into<String>) -> Self {
        Self {
            payload,
            origin: origin.into(),
            position: None,
            key: None,
        }
    }
}

/// A record's place in a partitioned log (a Kafka topic partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// How far a batch reaches in each log partition it read from: the offset
/// after its last record, per topic and partition (what a consumer commits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCheckpoint {
    next: Vec<(String, i32, i64)>,
}

impl LogCheckpoint {
    /// The checkpoint after `records` (records without a position add
    /// nothing).
    pub fn after(records: &[RawRecord]) -> Self {
        let mut next: Vec<(String, i32, i64)> = Vec::new();
        for p in records.iter().filter_map(|r| r.position.as_ref()) {
            match next
                .iter_mut()
                .find(|(t, part, _)| *part == p.partition && *t == p.topic)
            {
                Some(entry) => entry.2 = entry.2.max(p.offset + 1),
                None => next.push((p.topic.clone(), p.partition, p.offset + 1)),
            }
        }
        Self { next }
    }

    /// `(topic, partition, next offset)` for every partition read.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.next.iter().map(|(t, p, o)| (t.as_str(), *p, *o))
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }
}

/// Failures of an event source or dead-letter sink.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("event source failed: {0}")]
    Io(String),
}

/// A finite source of raw events with nothing to acknowledge (an NDJSON
/// file or stdin): a run that fails part way is recovered by reading the
/// source again, and the store's idempotence absorbs what was stored
/// before. Sources that track progress are [`EventStream`]s.
#[async_trait]
pub trait EventSource: Send {
    /// Up to `max` records; an empty vector means the source is exhausted.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<RawRecord>, SourceError>;
}

/// Every record of the ingest log as it arrives, read by this process
/// alone (outside the consumer group, committing nothing), and how far the
/// shared group has committed: what live features need to learn of events
/// another replica stores.
#[async_trait]
pub trait LogWatch: Send {
    /// The next records (at most `max`), waiting up to `wait` for the
    /// first; empty = nothing yet.
    async fn next_batch(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<RawRecord>, SourceError>;
    /// The shared group's committed offset of every watched partition
    /// (`topic, partition, offset`): records below it are stored.
    async fn committed(&mut self) -> Result<Vec<(String, i32, i64)>, SourceError>;
}

/// An unbounded, partitioned stream of raw events (a Kafka consumer group).
/// Unlike [`EventSource`], an empty batch means "nothing yet", not the end.
#[async_trait]
pub trait EventStream: Send {
    /// Up to `max` records, waiting at most `wait` for them to arrive.
    async fn next_batch(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<RawRecord>, SourceError>;
    /// Marks the records up to `through` as processed (called only after
    /// every batch up to it is durably stored: at-least-once delivery).
    /// Records handed out after those stay uncommitted: the consumer loop
    /// fetches the next batch while the previous one is being stored.
    async fn commit(&mut self, through: &LogCheckpoint) -> Result<(), SourceError>;
    /// Stops fetching (the store is failing) without leaving the group.
    fn pause(&mut self) -> Result<(), SourceError>;
    /// Fetches again after [`EventStream::pause`].
    fn resume(&mut self) -> Result<(), SourceError>;
    /// Waits `duration` while paused, keeping the client alive (heartbeats,
    /// poll deadlines). Records that still arrive are kept for the next batch.
    async fn idle(&mut self, duration: std::time::Duration);
    /// What keeps the stream from its source right now (no broker
    /// reachable, ...), for readiness; `None` when it is fine.
    fn problem(&self) -> Option<String> {
        None
    }
    /// Commits what was processed and leaves the group.
    async fn close(self: Box<Self>);
}

/// Where rejected records go, with the reason (rejects file, DLQ topic).
#[async_trait]
pub trait DeadLetterSink: Send {
    async fn reject(&mut self, record: &RawRecord, error: &EventError) -> Result<(), SourceError>;
    async fn flush(&mut self) -> Result<(), SourceError>;
}

/// One user's batch score, as `churn score` writes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScoredUser {
    /// The user's id in the form it was sent (number or string).
    pub user_id: crate::domain::user::UserId,
    pub churn_probability: f64,
    /// Before calibration; equal to `churn_probability` when none is kept.
    pub raw_probability: f64,
    pub model_version: u64,
    /// RFC 3339.
    pub features_as_of: String,
    /// The top contributions (log-odds of the raw probability), when asked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<crate::domain::explanation::Contribution>,
}

/// A table batch scores are also written to (ClickHouse
/// `churn.predictions`), for BI joins.
#[async_trait]
pub trait PredictionSink: Send + Sync {
    /// Appends one chunk of scores computed at `scored_at` (seconds).
    async fn write(&self, scored_at: i64, rows: &[ScoredUser]) -> Result<u64, StoreError>;
}
