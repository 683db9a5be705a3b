//! `IngestEvents`: the one ingestion pipeline every driver goes through —
//! NDJSON and CSV files and stdin (`churn ingest`), HTTP bodies
//! (`POST /events`), the Kafka stream and generated demo events:
//!
//! parse/map → validate → identity → store (idempotent) → dead-letter →
//! count → (caller) acknowledge
//!
//! - *parse/map* reads the producer's shape ([`EventFormat`]: field mapping,
//!   time format and zone); *validate* applies the event rules; both are
//!   [`IngestEvents::prepare`], split over the cores for large batches.
//! - *identity* ([`crate::domain::identity`]): a producer's event id, else
//!   a log position, else the content and its ordinal within the
//!   [`Delivery`] — one file, one stdin stream, one HTTP body, one generator
//!   run. Redelivering any of them stores nothing new; identical lines of
//!   one delivery are distinct events.
//! - *store*: names of string-keyed users first (a key held by another name
//!   is refused, never merged), then the events, all or nothing.
//! - *dead-letter*: only after the store succeeded, so a record is never
//!   both retried and dead-lettered; rejects are tallied by field in the
//!   store (`churn stats`) and counted in `/metrics`.
//!
//! A bad record never stops the good ones around it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::AddAssign;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;

use crate::application::ports::{
    AppendOutcome, DeadLetterSink, EventSource, EventStore, LogPosition, RawRecord, RejectTally,
    SourceError, StoreError,
};
use crate::domain::event::{Event, EventError, TimePolicy};
use crate::domain::event_format::EventFormat;
use crate::domain::identity::{DeliveryIds, assign_logged};
use crate::telemetry::metric_names;

/// Counts of one ingestion run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IngestReport {
    pub read: u64,
    pub inserted: u64,
    /// Redeliveries: events already stored with the same identity.
    pub duplicates: u64,
    pub rejected: u64,
}

impl AddAssign for IngestReport {
    fn add_assign(&mut self, other: Self) {
        self.read += other.read;
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
    }
}

/// Below this many records per core, one thread parses the batch: a
/// thread's start costs more than it would save.
const PARALLEL_PARSE_MIN_RECORDS: usize = 4_096;

/// Name keys remembered as registered, per process, before the set is
/// cleared (about 16 MB): a stream of returning users then costs the store
/// no name lookups.
const KNOWN_NAMES_MAX: usize = 1 << 20;

/// Where a delivery's records come from (labels in `churn stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Stdin,
    Http,
    Kafka,
    Generator,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Stdin => "stdin",
            Self::Http => "http",
            Self::Kafka => "kafka",
            Self::Generator => "generator",
        }
    }
}

/// One delivery's identity state: create one per file, stdin stream, HTTP
/// body or generator run, and pass every batch of it in order. Records with
/// a log position (Kafka) take their identity from it instead.
pub struct Delivery {
    kind: SourceKind,
    ids: DeliveryIds,
    /// Records of this delivery handed to `prepare` so far.
    records: u64,
}

impl Delivery {
    pub fn new(kind: SourceKind) -> Self {
        Self {
            kind,
            ids: DeliveryIds::new(),
            records: 0,
        }
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }
}

/// Why an ingestion run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// A batch after parsing, validation and identity: the events to store and
/// the records to dead-letter, with how many records came in.
#[derive(Debug)]
pub struct Batch {
    pub source: SourceKind,
    pub read: u64,
    pub events: Vec<Event>,
    /// Where each event was read (`positions[i]` for `events[i]`) when
    /// every record came from a partitioned log; empty otherwise.
    pub positions: Vec<LogPosition>,
    pub rejects: Vec<(RawRecord, EventError)>,
}

impl Batch {
    fn empty(source: SourceKind) -> Self {
        Self {
            source,
            read: 0,
            events: Vec::new(),
            positions: Vec::new(),
            rejects: Vec::new(),
        }
    }
}

/// What storing a batch did: the counts, and events the store refused
/// (a name whose key another name holds), to dead-letter with the rejects.
#[derive(Debug, Default)]
pub struct Stored {
    pub outcome: AppendOutcome,
    pub refused: Vec<(RawRecord, EventError)>,
}

impl Stored {
    /// The batch's report once stored this way.
    pub fn report(&self, batch: &Batch) -> IngestReport {
        IngestReport {
            read: batch.read,
            inserted: self.outcome.inserted,
            duplicates: self.outcome.duplicates,
            rejected: (batch.rejects.len() + self.refused.len()) as u64,
        }
    }
}

/// A chunk parsed on one thread: events with their record index.
struct Parsed {
    events: Vec<(u64, Event)>,
    positions: Vec<LogPosition>,
    rejects: Vec<(RawRecord, EventError)>,
}

fn parse_chunk(
    format: &EventFormat,
    records: Vec<RawRecord>,
    first_index: u64,
    policy: TimePolicy,
) -> Parsed {
    let mut out = Parsed {
        events: Vec::with_capacity(records.len()),
        positions: Vec::new(),
        rejects: Vec::new(),
    };
    for (i, record) in records.into_iter().enumerate() {
        match format.parse(&record.payload, policy) {
            Ok(mut e) => {
                if let Some(p) = record.position {
                    assign_logged(&mut e, &p.topic, p.partition, p.offset);
                    out.positions.push(p);
                }
                out.events.push((first_index + i as u64, e));
            }
            Err(err) => {
                metrics::counter!(metric_names::EVENTS_REJECTED_TOTAL, "field" => err.field())
                    .increment(1);
                out.rejects.push((record, err));
            }
        }
    }
    out
}

/// The ingestion use case.
#[derive(Clone)]
pub struct IngestEvents {
    store: Arc<dyn EventStore>,
    format: Arc<EventFormat>,
    max_future_secs: i64,
    min_time: i64,
    batch_size: usize,
    /// Name keys known to be registered with their own name.
    known_names: Arc<Mutex<HashSet<u64>>>,
    /// Told which users' events were stored, so their live features are
    /// read again (every ingest path writes through [`IngestEvents::write`]).
    live: Option<crate::application::live_features::LiveFeatures>,
}

impl IngestEvents {
    pub fn new(store: Arc<dyn EventStore>, max_future_secs: i64, batch_size: usize) -> Self {
        Self {
            store,
            format: Arc::new(EventFormat::default()),
            max_future_secs,
            min_time: crate::domain::event::DEFAULT_MIN_EVENT_TIME,
            batch_size: batch_size.max(1),
            known_names: Arc::default(),
            live: None,
        }
    }

    /// Stored events make their users' live features stale.
    pub fn with_live(mut self, live: crate::application::live_features::LiveFeatures) -> Self {
        self.live = live.enabled().then_some(live);
        self
    }

    /// Refuses events before `min_time` (`ingest.min_event_time`).
    pub fn with_min_time(mut self, min_time: i64) -> Self {
        self.min_time = min_time;
        self
    }

    /// Reads records in this shape (`ingest.fields`, `ingest.time_format`,
    /// `ingest.timezone`, `ingest.default_event_type`).
    pub fn with_format(mut self, format: EventFormat) -> Self {
        self.format = Arc::new(format);
        self
    }

    pub fn format(&self) -> &EventFormat {
        &self.format
    }

    /// Events per store write (`ingest.batch_size`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn policy(&self) -> TimePolicy {
        TimePolicy {
            now: chrono::Utc::now().timestamp(),
            max_future_secs: self.max_future_secs,
            min_time: self.min_time,
        }
    }

    /// Parse/map, validate and identity for the next records of `delivery`.
    /// Pure apart from reading the clock and the counters.
    ///
    /// Large batches are parsed on several cores; events and rejects keep
    /// the input order, and identities are assigned in that order.
    pub fn prepare(&self, records: Vec<RawRecord>, delivery: &mut Delivery) -> Batch {
        let policy = self.policy();
        let first = delivery.records;
        let n = records.len();
        delivery.records += n as u64;
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(n / PARALLEL_PARSE_MIN_RECORDS)
            .min(8);
        let parts: Vec<Parsed> = if threads <= 1 {
            vec![parse_chunk(&self.format, records, first, policy)]
        } else {
            let per = n.div_ceil(threads);
            let mut chunks = Vec::with_capacity(threads);
            let mut rest = records;
            while rest.len() > per {
                let tail = rest.split_off(per);
                chunks.push(std::mem::replace(&mut rest, tail));
            }
            chunks.push(rest);
            let format = &*self.format;
            std::thread::scope(|scope| {
                let mut start = first;
                let handles: Vec<_> = chunks
                    .into_iter()
                    .map(|chunk| {
                        let at = start;
                        start += chunk.len() as u64;
                        scope.spawn(move || parse_chunk(format, chunk, at, policy))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect()
            })
        };
        let mut batch = Batch::empty(delivery.kind);
        batch.read = n as u64;
        batch.events.reserve(n);
        for part in parts {
            for (index, mut e) in part.events {
                if part.positions.is_empty() {
                    delivery.ids.assign(&mut e, index);
                }
                batch.events.push(e);
            }
            batch.positions.extend(part.positions);
            batch.rejects.extend(part.rejects);
        }
        // Positions are all or nothing: a batch mixing logged and unlogged
        // records is stored by identity alone.
        if batch.positions.len() != batch.events.len() {
            batch.positions.clear();
        }
        batch
    }

    /// Identity for events made in process (the generator): each is a
    /// record of `delivery`, in order.
    pub fn prepare_events(&self, events: Vec<Event>, delivery: &mut Delivery) -> Batch {
        let mut batch = Batch::empty(delivery.kind);
        batch.read = events.len() as u64;
        batch.events = events;
        for e in &mut batch.events {
            delivery.ids.assign(e, delivery.records);
            delivery.records += 1;
        }
        batch
    }

    /// Stores a prepared batch: the names of string-keyed users, then the
    /// events (with their log positions when the batch has them), all or
    /// nothing. Events whose key another name holds are returned to be
    /// dead-lettered instead. Safe to retry with the same batch (the
    /// stream's retries); sources that do not retry hand the batch over
    /// with [`IngestEvents::store_owned`], which copies nothing.
    ///
    /// # Errors
    /// [`StoreError`] when the batch could not be written.
    pub async fn store_batch(&self, batch: &Batch) -> Result<Stored, StoreError> {
        self.write(Cow::Borrowed(&batch.events), &batch.positions)
            .await
    }

    /// [`IngestEvents::store_batch`] taking the events: they move into the
    /// store instead of being copied. The batch comes back without them,
    /// for its report and its rejects.
    pub async fn store_owned(&self, mut batch: Batch) -> (Batch, Result<Stored, StoreError>) {
        let events = std::mem::take(&mut batch.events);
        let positions = std::mem::take(&mut batch.positions);
        let stored = self.write(Cow::Owned(events), &positions).await;
        (batch, stored)
    }

    async fn write(
        &self,
        events: Cow<'_, [Event]>,
        positions: &[LogPosition],
    ) -> Result<Stored, StoreError> {
        let collided = self.register_names(&events).await?;
        let refused: Vec<(RawRecord, EventError)> = events
            .iter()
            .filter(|e| collided.contains(&e.user_id()))
            .map(refused_name)
            .collect();
        let logged = !positions.is_empty() && positions.len() == events.len();
        // Taken before the events move into the store.
        let touched: Vec<u64> = match &self.live {
            Some(_) => {
                let mut users: Vec<u64> = events.iter().map(Event::user_id).collect();
                users.sort_unstable();
                users.dedup();
                users
            }
            None => Vec::new(),
        };
        let outcome = match (logged, collided.is_empty()) {
            (true, true) => self.store.append_from_log(&events, positions).await?,
            (true, false) => {
                let (events, positions): (Vec<Event>, Vec<LogPosition>) = events
                    .iter()
                    .zip(positions)
                    .filter(|(e, _)| !collided.contains(&e.user_id()))
                    .map(|(e, p)| (e.clone(), p.clone()))
                    .unzip();
                self.store.append_from_log(&events, &positions).await?
            }
            (false, true) => self.store.append(events.into_owned()).await?,
            (false, false) => {
                let mut events = events.into_owned();
                events.retain(|e| !collided.contains(&e.user_id()));
                self.store.append(events).await?
            }
        };
        // A batch of redeliveries stored nothing: no row is stale.
        if let Some(live) = &self.live
            && outcome.inserted > 0
        {
            live.stored(touched);
        }
        metrics::counter!(metric_names::EVENTS_INGESTED_TOTAL).increment(outcome.inserted);
        metrics::counter!(metric_names::EVENTS_DUPLICATE_TOTAL).increment(outcome.duplicates);
        Ok(Stored { outcome, refused })
    }

    /// Registers the batch's names not known to be registered; the keys
    /// another name holds.
    async fn register_names(&self, events: &[Event]) -> Result<HashSet<u64>, StoreError> {
        let mut fresh: Vec<(u64, &str)> = {
            let known = self.known_names.lock().unwrap_or_else(|p| p.into_inner());
            events
                .iter()
                .filter_map(|e| e.user_name().map(|n| (e.user_id(), n)))
                .filter(|(k, _)| !known.contains(k))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(HashSet::new());
        }
        fresh.sort_unstable();
        fresh.dedup();
        let collided: HashSet<u64> = self
            .store
            .register_names(&fresh)
            .await?
            .into_iter()
            .collect();
        // Two names of one key inside this batch: the store kept the
        // first; the other collides.
        let mut by_key: std::collections::HashMap<u64, &str> = std::collections::HashMap::new();
        let mut collided = collided;
        for (k, n) in &fresh {
            if let Some(other) = by_key.insert(*k, n)
                && other != *n
            {
                collided.insert(*k);
            }
        }
        let mut known = self.known_names.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() + fresh.len() > KNOWN_NAMES_MAX {
            known.clear();
        }
        known.extend(
            fresh
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| !collided.contains(k)),
        );
        Ok(collided)
    }

    /// Hands every reject to `sink`, flushes it, then adds the rejects to
    /// the store's running tally (best effort: a failing tally is logged,
    /// the records are already dead-lettered).
    ///
    /// # Errors
    /// [`SourceError`] when the sink fails; retrying resends every reject.
    pub async fn dead_letter(
        &self,
        source: SourceKind,
        rejects: &[(RawRecord, EventError)],
        sink: &mut dyn DeadLetterSink,
    ) -> Result<(), SourceError> {
        if rejects.is_empty() {
            return Ok(());
        }
        for (record, error) in rejects {
            sink.reject(record, error).await?;
        }
        sink.flush().await?;
        metrics::counter!(metric_names::DEAD_LETTERS_TOTAL).increment(rejects.len() as u64);
        let tallies = tally(source, rejects);
        if let Err(e) = self.store.record_rejects(&tallies).await {
            tracing::warn!(error = %e, "reject counts not recorded in the store");
        }
        Ok(())
    }

    /// Store then dead-letter one prepared batch (sources that do not
    /// retry: files, HTTP bodies, the generator). The caller acknowledges
    /// its source afterwards.
    ///
    /// # Errors
    /// [`IngestError`] if the store or the sink fails; nothing was
    /// dead-lettered when the store failed.
    pub async fn commit(
        &self,
        batch: Batch,
        dead_letters: &mut dyn DeadLetterSink,
    ) -> Result<IngestReport, IngestError> {
        let (batch, stored) = self.store_owned(batch).await;
        self.finish(&batch, &stored?, dead_letters).await
    }

    /// The whole pipeline for the next records of `delivery`.
    ///
    /// # Errors
    /// [`IngestError`] if the store or the sink fails.
    pub async fn process(
        &self,
        records: Vec<RawRecord>,
        delivery: &mut Delivery,
        dead_letters: &mut dyn DeadLetterSink,
    ) -> Result<IngestReport, IngestError> {
        let batch = self.prepare(records, delivery);
        self.commit(batch, dead_letters).await
    }

    /// The pipeline for events made in process (the generator: valid by
    /// construction, so nothing is dead-lettered but refused names).
    ///
    /// # Errors
    /// [`IngestError`] if the store fails.
    pub async fn process_events(
        &self,
        events: Vec<Event>,
        delivery: &mut Delivery,
    ) -> Result<IngestReport, IngestError> {
        let batch = self.prepare_events(events, delivery);
        let mut refused = CollectRejects::new(100);
        let report = self.commit(batch, &mut refused).await?;
        for note in &refused.notes {
            tracing::warn!(origin = %note.origin, error = %note.error, "generated event refused");
        }
        Ok(report)
    }

    /// Drains a finite source (a file or stdin: one delivery) batch by
    /// batch: while one batch is being stored, the next is read and
    /// prepared (the store writes on one core, and parsing is the rest of
    /// the work), so at most two batches are held. A batch's rejects are
    /// dead-lettered once it is stored. `progress` is called after every
    /// stored batch with the running totals.
    ///
    /// # Errors
    /// [`IngestError`] if the store, the source or the sink fails; batches
    /// stored before the failure stay stored, and reading the source again
    /// stores only what is missing.
    pub async fn run(
        &self,
        source: &mut dyn EventSource,
        kind: SourceKind,
        dead_letters: &mut dyn DeadLetterSink,
        mut progress: impl FnMut(&IngestReport) + Send,
    ) -> Result<IngestReport, IngestError> {
        type Storing = tokio::task::JoinHandle<(Batch, Result<Stored, StoreError>)>;
        let mut delivery = Delivery::new(kind);
        let mut total = IngestReport::default();
        let mut storing: Option<Storing> = None;
        loop {
            let records = source.next_batch(self.batch_size).await;
            let next = match records {
                Ok(r) if r.is_empty() => None,
                Ok(r) => Some(self.prepare(r, &mut delivery)),
                Err(e) => {
                    // The batch in flight still lands (and is dead-lettered)
                    // before the error.
                    if let Some(h) = storing.take()
                        && let Ok((batch, Ok(stored))) = h.await
                    {
                        self.finish(&batch, &stored, dead_letters).await?;
                    }
                    return Err(e.into());
                }
            };
            if let Some(h) = storing.take() {
                let (batch, stored) = h
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?;
                total += self.finish(&batch, &stored?, dead_letters).await?;
                progress(&total);
            }
            let Some(batch) = next else {
                break;
            };
            let this = self.clone();
            storing = Some(tokio::spawn(async move { this.store_owned(batch).await }));
        }
        Ok(total)
    }

    /// Dead-letters a stored batch's rejects; its report.
    async fn finish(
        &self,
        batch: &Batch,
        stored: &Stored,
        dead_letters: &mut dyn DeadLetterSink,
    ) -> Result<IngestReport, IngestError> {
        self.dead_letter(batch.source, &batch.rejects, dead_letters)
            .await?;
        self.dead_letter(batch.source, &stored.refused, dead_letters)
            .await?;
        Ok(stored.report(batch))
    }
}

/// An event refused because another name holds its user's key: kept whole
/// (as JSON) for the dead-letter path.
fn refused_name(e: &Event) -> (RawRecord, EventError) {
    metrics::counter!(metric_names::EVENTS_REJECTED_TOTAL, "field" => "user_id").increment(1);
    (
        RawRecord::new(e.to_json().to_string().into_bytes(), "stored names"),
        EventError::invalid(
            "user_id",
            format!(
                "{:?} has the same 62-bit key as another user id already stored; \
                 send this user under another id",
                e.user_name().unwrap_or_default()
            ),
        ),
    )
}

/// Rejects by field, with the first reason of each as the example.
fn tally(source: SourceKind, rejects: &[(RawRecord, EventError)]) -> Vec<RejectTally> {
    let mut out: Vec<RejectTally> = Vec::new();
    for (record, error) in rejects {
        let field = error.field();
        match out.iter_mut().find(|t| t.field == field) {
            Some(t) => t.count += 1,
            None => out.push(RejectTally {
                source: source.as_str().to_string(),
                field: field.to_string(),
                count: 1,
                example: format!("{}: {error}", record.origin),
            }),
        }
    }
    out
}

/// A rejected record as a client sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectNote {
    /// Where the record came from (array index, line number, offset).
    pub origin: String,
    pub field: &'static str,
    pub error: String,
}

/// A dead-letter sink for sources that answer a client directly (HTTP):
/// keeps the first `limit` reasons and counts all rejects, so a body of a
/// million bad lines costs a bounded answer.
#[derive(Debug)]
pub struct CollectRejects {
    limit: usize,
    pub notes: Vec<RejectNote>,
    pub total: u64,
}

impl CollectRejects {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            notes: Vec::new(),
            total: 0,
        }
    }
}

#[async_trait]
impl DeadLetterSink for CollectRejects {
    async fn reject(&mut self, record: &RawRecord, error: &EventError) -> Result<(), SourceError> {
        self.total += 1;
        if self.notes.len() < self.limit {
            self.notes.push(RejectNote {
                origin: record.origin.clone(),
                field: error.field(),
                error: error.to_string(),
            });
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}

/// Rejections of one field, with the first reason seen as an example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectReason {
    pub field: &'static str,
    pub count: u64,
    pub example: String,
    /// The first rejected line of this field (up to 300 bytes).
    pub line: String,
}

/// A dead-letter sink decorator that tallies rejections by the field at
/// fault before passing each on, so a run can say why lines were refused
/// (`churn ingest` prints the top reasons with an example line).
pub struct TallyRejects<'a> {
    inner: &'a mut dyn DeadLetterSink,
    reasons: Vec<RejectReason>,
}

impl<'a> TallyRejects<'a> {
    pub fn new(inner: &'a mut dyn DeadLetterSink) -> Self {
        Self {
            inner,
            reasons: Vec::new(),
        }
    }

    /// Reasons by count, most frequent first.
    pub fn reasons(&self) -> Vec<RejectReason> {
        let mut r = self.reasons.clone();
        r.sort_by(|a, b| b.count.cmp(&a.count).then(a.field.cmp(b.field)));
        r
    }
}

/// At most `max` bytes of a line, cut at a character boundary.
pub fn excerpt(payload: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(payload);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[async_trait]
impl DeadLetterSink for TallyRejects<'_> {
    async fn reject(&mut self, record: &RawRecord, error: &EventError) -> Result<(), SourceError> {
        self.inner.reject(record, error).await?;
        let field = error.field();
        match self.reasons.iter_mut().find(|r| r.field == field) {
            Some(r) => r.count += 1,
            None => self.reasons.push(RejectReason {
                field,
                count: 1,
                example: format!("{}: {error}", record.origin),
                line: excerpt(&record.payload, 300),
            }),
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        self.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemoryDeadLetters, MemoryStore};

    fn records() -> Vec<RawRecord> {
        [
            r#"{"user_id":1,"event_time":"2026-01-01 10:00:00","event_type":"login"}"#,
            r#"{"user_id":1,"event_time":"2026-01-01 10:05:00"}"#,
            r#"{"user_id":2,"event_time":"2026-01-01 11:00:00","event_type":"view"}"#,
            "not json",
        ]
        .iter()
        .enumerate()
        .map(|(i, l)| RawRecord::new(l.as_bytes().to_vec(), format!("f:{}", i + 1)))
        .collect()
    }

    fn file() -> Delivery {
        Delivery::new(SourceKind::File)
    }

    #[test]
    fn a_large_batch_parsed_on_several_threads_keeps_order_and_counts() {
        let n = 5 * PARALLEL_PARSE_MIN_RECORDS + 7;
        let records: Vec<RawRecord> = (0..n)
            .map(|i| {
                let line = if i % 97 == 0 {
                    format!(r#"{{"user_id":{i},"event_time":"never","event_type":"x"}}"#)
                } else {
                    format!(
                        r#"{{"user_id":{i},"event_time":"2026-01-01 10:00:00","event_type":"x"}}"#
                    )
                };
                RawRecord::new(line.into_bytes(), format!("f:{i}"))
            })
            .collect();
        let ingest = IngestEvents::new(Arc::new(MemoryStore::new(3)), 86_400 * 3_650, 1_000);
        let batch = ingest.prepare(records, &mut file());
        assert_eq!(batch.read, n as u64);
        let bad = (0..n).filter(|i| i % 97 == 0).count();
        assert_eq!(batch.rejects.len(), bad);
        assert_eq!(batch.events.len(), n - bad);
        let users: Vec<u64> = batch.events.iter().map(Event::user_id).collect();
        let expected: Vec<u64> = (0..n as u64).filter(|i| i % 97 != 0).collect();
        assert_eq!(users, expected, "events in input order");
        let origins: Vec<&str> = batch
            .rejects
            .iter()
            .map(|(r, _)| r.origin.as_str())
            .collect();
        assert_eq!(origins[1], "f:97", "rejects in input order");
    }

    #[tokio::test]
    async fn good_records_are_stored_and_bad_ones_dead_lettered_with_reasons() {
        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 2);
        let mut dlq = MemoryDeadLetters::default();
        let report = ingest
            .process(records(), &mut file(), &mut dlq)
            .await
            .unwrap();
        assert_eq!(
            report,
            IngestReport {
                read: 4,
                inserted: 2,
                duplicates: 0,
                rejected: 2
            }
        );
        let rejected = dlq.rejected.lock().unwrap().clone();
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].0, "f:2");
        assert!(rejected[0].1.contains("event_type"), "{rejected:?}");
        // Redelivery: duplicates, not new events.
        let again = ingest
            .process(records(), &mut file(), &mut dlq)
            .await
            .unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 2));
        assert_eq!(store.stats().await.unwrap().events, 2);
        // The store keeps the running tally by source and field.
        let tallies = store.reject_tallies().await.unwrap();
        assert_eq!(tallies.len(), 2, "{tallies:?}");
        assert!(tallies.iter().all(|t| t.count == 2 && t.source == "file"));
    }

    #[tokio::test]
    async fn identical_lines_are_distinct_events_and_their_redelivery_is_not() {
        let line = r#"{"user_id":"u-7","event_time":"2026-01-01 10:00:00","event_type":"purchase","amount":4.5}"#;
        let lines = || {
            (0..3)
                .map(|i| RawRecord::new(line.as_bytes().to_vec(), format!("f:{i}")))
                .collect::<Vec<_>>()
        };
        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 2);
        let mut dlq = MemoryDeadLetters::default();
        let first = ingest
            .process(lines(), &mut file(), &mut dlq)
            .await
            .unwrap();
        assert_eq!((first.inserted, first.duplicates), (3, 0));
        let again = ingest
            .process(lines(), &mut file(), &mut dlq)
            .await
            .unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 3));
        // Split over two batches of one delivery: the same identities.
        let mut d = file();
        let mut all = lines();
        let tail = all.split_off(1);
        let a = ingest.process(all, &mut d, &mut dlq).await.unwrap();
        let b = ingest.process(tail, &mut d, &mut dlq).await.unwrap();
        assert_eq!(
            (a.duplicates + b.duplicates, a.inserted + b.inserted),
            (3, 0)
        );
        assert_eq!(store.stats().await.unwrap().events, 3);
        let names = store.user_names(&[store_key("u-7")]).await.unwrap();
        assert_eq!(names.values().next().map(String::as_str), Some("u-7"));
    }

    fn store_key(name: &str) -> u64 {
        crate::domain::user::name_key(name)
    }

    #[tokio::test]
    async fn a_name_whose_key_is_held_by_another_is_refused_not_merged() {
        let store = MemoryStore::new(3);
        // Plant another name on u-7's key, as a collision would.
        store
            .register_names(&[(store_key("u-7"), "someone-else")])
            .await
            .unwrap();
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 10);
        let mut dlq = MemoryDeadLetters::default();
        let line = r#"{"user_id":"u-7","event_time":"2026-01-01 10:00:00","event_type":"x"}"#;
        let report = ingest
            .process(
                vec![RawRecord::new(line.as_bytes().to_vec(), "f:1")],
                &mut file(),
                &mut dlq,
            )
            .await
            .unwrap();
        assert_eq!((report.inserted, report.rejected), (0, 1));
        let rejected = dlq.rejected.lock().unwrap().clone();
        assert!(rejected[0].1.contains("62-bit key"), "{rejected:?}");
        assert!(
            rejected[0].2.contains("u-7"),
            "the event is kept: {rejected:?}"
        );
    }

    #[tokio::test]
    async fn a_store_outage_fails_the_batch_before_anything_is_dead_lettered() {
        let store = MemoryStore::new(3);
        store.outage.set_failing(true);
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 2);
        let mut dlq = MemoryDeadLetters::default();
        let err = ingest
            .process(records(), &mut file(), &mut dlq)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            IngestError::Store(StoreError::Unavailable(_))
        ));
        assert!(dlq.rejected.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_file_run_dead_letters_only_what_its_stored_batches_refused() {
        struct Lines(Vec<RawRecord>);
        #[async_trait]
        impl EventSource for Lines {
            async fn next_batch(&mut self, max: usize) -> Result<Vec<RawRecord>, SourceError> {
                let n = max.min(self.0.len());
                Ok(self.0.drain(..n).collect())
            }
        }
        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 2);
        let mut dlq = MemoryDeadLetters::default();
        store.outage.set_failing(true);
        let err = ingest
            .run(&mut Lines(records()), SourceKind::File, &mut dlq, |_| {})
            .await;
        assert!(err.is_err());
        assert!(
            dlq.rejected.lock().unwrap().is_empty(),
            "nothing dead-lettered from a batch that was not stored"
        );
        store.outage.set_failing(false);
        let total = ingest
            .run(&mut Lines(records()), SourceKind::File, &mut dlq, |_| {})
            .await
            .unwrap();
        assert_eq!((total.read, total.inserted, total.rejected), (4, 2, 2));
        assert_eq!(dlq.rejected.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn rejections_are_tallied_by_field_and_passed_on() {
        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store), 86_400, 10);
        let mut dlq = MemoryDeadLetters::default();
        let mut tally = TallyRejects::new(&mut dlq);
        ingest
            .process(records(), &mut file(), &mut tally)
            .await
            .unwrap();
        ingest
            .process(records(), &mut file(), &mut tally)
            .await
            .unwrap();
        let reasons = tally.reasons();
        assert_eq!(reasons.len(), 2);
        assert_eq!((reasons[0].field, reasons[0].count), ("event_type", 2));
        assert!(reasons[0].example.starts_with("f:2: "), "{reasons:?}");
        assert!(reasons[0].line.contains("10:05:00"), "{reasons:?}");
        assert_eq!((reasons[1].field, reasons[1].count), ("json", 2));
        assert_eq!(dlq.rejected.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn collected_rejects_are_bounded_but_all_counted() {
        let mut sink = CollectRejects::new(1);
        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store), 86_400, 10);
        let report = ingest
            .process(records(), &mut file(), &mut sink)
            .await
            .unwrap();
        assert_eq!((report.rejected, sink.total, sink.notes.len()), (2, 2, 1));
        assert_eq!(sink.notes[0].origin, "f:2");
    }

    #[test]
    fn excerpts_cut_long_lines_at_a_character() {
        assert_eq!(excerpt("é".repeat(10).as_bytes(), 5), "éé…");
        assert_eq!(excerpt(b"short", 300), "short");
    }
}
