//! `IngestEvents`: the one ingestion pipeline every source goes through —
//! NDJSON files (`churn ingest`), HTTP bodies (`POST /events`), the Kafka
//! stream and generated demo events:
//!
//! validate → store (idempotent) → count → dead-letter → (caller) acknowledge
//!
//! A bad record never stops the good ones around it: it goes to the
//! source's dead-letter sink with its reason. The stages are public so the
//! stream loop can retry one stage without redoing the others; [`IngestEvents::process`]
//! runs them all for sources that do not retry.

use std::ops::AddAssign;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::application::ports::{
    AppendOutcome, DeadLetterSink, EventSource, EventStore, LogPosition, RawRecord, SourceError,
    StoreError,
};
use crate::domain::event::{Event, EventError, TimePolicy, parse_event_json};
use crate::telemetry::names;

/// Counts of one ingestion run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IngestReport {
    pub read: u64,
    pub inserted: u64,
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

/// Parses and validates records in order on the calling thread.
fn validate_all(records: Vec<RawRecord>, policy: TimePolicy) -> Batch {
    let mut batch = Batch {
        read: records.len() as u64,
        events: Vec::with_capacity(records.len()),
        positions: Vec::new(),
        rejects: Vec::new(),
    };
    for record in records {
        match parse_event_json(&record.payload, policy) {
            Ok(e) => {
                batch.events.push(e);
                if let Some(p) = record.position {
                    batch.positions.push(p);
                }
            }
            Err(err) => {
                metrics::counter!(names::EVENTS_REJECTED_TOTAL, "field" => err.field())
                    .increment(1);
                batch.rejects.push((record, err));
            }
        }
    }
    batch
}

/// The counters and report of one store write of `read` events.
fn counted(read: u64, outcome: AppendOutcome) -> IngestReport {
    metrics::counter!(names::EVENTS_INGESTED_TOTAL).increment(outcome.inserted);
    metrics::counter!(names::EVENTS_DUPLICATE_TOTAL).increment(outcome.duplicates);
    IngestReport {
        read,
        inserted: outcome.inserted,
        duplicates: outcome.duplicates,
        rejected: 0,
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

/// A batch after validation: the events to store and the records to
/// dead-letter, with how many records came in.
#[derive(Debug, Default)]
pub struct Batch {
    pub read: u64,
    pub events: Vec<Event>,
    /// Where each event was read (`positions[i]` for `events[i]`) when
    /// every record came from a partitioned log; empty otherwise.
    pub positions: Vec<LogPosition>,
    pub rejects: Vec<(RawRecord, EventError)>,
}

impl Batch {
    /// Positions are all or nothing: a batch mixing logged and unlogged
    /// records is stored by event identity alone.
    fn keep_positions_if_complete(&mut self) {
        if self.positions.len() != self.events.len() {
            self.positions.clear();
        }
    }

    /// The batch's counts once its events were stored with `stored`.
    pub fn report(&self, stored: IngestReport) -> IngestReport {
        IngestReport {
            read: self.read,
            inserted: stored.inserted,
            duplicates: stored.duplicates,
            rejected: self.rejects.len() as u64,
        }
    }
}

/// The ingestion use case.
#[derive(Clone)]
pub struct IngestEvents {
    store: Arc<dyn EventStore>,
    max_future_secs: i64,
    min_time: i64,
    batch_size: usize,
}

impl IngestEvents {
    pub fn new(store: Arc<dyn EventStore>, max_future_secs: i64, batch_size: usize) -> Self {
        Self {
            store,
            max_future_secs,
            min_time: crate::domain::event::DEFAULT_MIN_EVENT_TIME,
            batch_size: batch_size.max(1),
        }
    }

    /// Refuses events before `min_time` (`ingest.min_event_time`).
    pub fn with_min_time(mut self, min_time: i64) -> Self {
        self.min_time = min_time;
        self
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

    /// Stage 1: parses and validates records, counting rejects by the field
    /// at fault. Pure apart from reading the clock and the counters.
    ///
    /// Large batches are split over the machine's cores (parsing is most
    /// of file ingest's time); events and rejects keep the input order.
    pub fn validate(&self, records: Vec<RawRecord>) -> Batch {
        let policy = self.policy();
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(records.len() / PARALLEL_PARSE_MIN_RECORDS)
            .min(8);
        if threads <= 1 {
            let mut batch = validate_all(records, policy);
            batch.keep_positions_if_complete();
            return batch;
        }
        let per = records.len().div_ceil(threads);
        let mut chunks = Vec::with_capacity(threads);
        let mut rest = records;
        while rest.len() > per {
            let tail = rest.split_off(per);
            chunks.push(std::mem::replace(&mut rest, tail));
        }
        chunks.push(rest);
        let parts: Vec<Batch> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| scope.spawn(move || validate_all(chunk, policy)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut batch = Batch::default();
        for part in parts {
            batch.read += part.read;
            batch.events.extend(part.events);
            batch.positions.extend(part.positions);
            batch.rejects.extend(part.rejects);
        }
        batch.keep_positions_if_complete();
        batch
    }

    /// Stage 2: stores valid events (all or nothing) and counts them.
    ///
    /// # Errors
    /// [`StoreError`] when the batch could not be written (nothing was).
    pub async fn store(&self, events: Vec<Event>) -> Result<IngestReport, StoreError> {
        let read = events.len() as u64;
        Ok(counted(read, self.store.append(events).await?))
    }

    /// Stage 2 for a validated batch: like [`Self::store`], handing the
    /// store the records' log positions when the batch has them.
    ///
    /// # Errors
    /// [`StoreError`] when the batch could not be written.
    pub async fn store_batch(&self, batch: &Batch) -> Result<IngestReport, StoreError> {
        if batch.positions.is_empty() || batch.positions.len() != batch.events.len() {
            return self.store(batch.events.clone()).await;
        }
        let outcome = self
            .store
            .append_from_log(&batch.events, &batch.positions)
            .await?;
        Ok(counted(batch.events.len() as u64, outcome))
    }

    /// Stores already-valid events (generated ones) in `ingest.batch_size`
    /// writes.
    ///
    /// # Errors
    /// [`StoreError`]; the writes before the failing one stay stored.
    pub async fn store_all(&self, events: Vec<Event>) -> Result<IngestReport, StoreError> {
        let mut total = IngestReport::default();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<Event> = events.by_ref().take(self.batch_size).collect();
            total += self.store(chunk).await?;
        }
        Ok(total)
    }

    /// Stage 3: hands every reject to `sink` and flushes it.
    ///
    /// # Errors
    /// [`SourceError`] when the sink fails; retrying resends every reject.
    pub async fn dead_letter(
        &self,
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
        metrics::counter!(names::DEAD_LETTERS_TOTAL).increment(rejects.len() as u64);
        Ok(())
    }

    /// Stages 1–3 for one batch of a source that does not retry (files,
    /// HTTP). The caller acknowledges its source afterwards.
    ///
    /// # Errors
    /// [`IngestError`] if the store or the sink fails.
    pub async fn process(
        &self,
        records: Vec<RawRecord>,
        dead_letters: &mut dyn DeadLetterSink,
    ) -> Result<IngestReport, IngestError> {
        let Batch {
            read,
            events,
            rejects,
            ..
        } = self.validate(records);
        let stored = self.store(events).await?;
        self.dead_letter(&rejects, dead_letters).await?;
        Ok(IngestReport {
            read,
            inserted: stored.inserted,
            duplicates: stored.duplicates,
            rejected: rejects.len() as u64,
        })
    }

    /// Drains a source batch by batch: while one batch is being stored,
    /// the next is read and validated (the store writes on one core, and
    /// parsing is the rest of the work), so at most two batches are held.
    /// Rejects are dead-lettered as their batch is validated.
    /// `progress` is called after every stored batch with the running
    /// totals.
    ///
    /// # Errors
    /// [`IngestError`] if the store, the source or the sink fails; batches
    /// stored before the failure stay stored, and reading the source again
    /// stores only what is missing.
    pub async fn run(
        &self,
        source: &mut dyn EventSource,
        dead_letters: &mut dyn DeadLetterSink,
        mut progress: impl FnMut(&IngestReport) + Send,
    ) -> Result<IngestReport, IngestError> {
        let mut total = IngestReport::default();
        let mut storing: Option<tokio::task::JoinHandle<Result<IngestReport, StoreError>>> = None;
        loop {
            let records = source.next_batch(self.batch_size).await;
            let next = match records {
                Ok(r) if r.is_empty() => None,
                Ok(r) => Some(self.validate(r)),
                Err(e) => {
                    // The batch in flight still lands before the error.
                    if let Some(h) = storing.take() {
                        let _ = h.await;
                    }
                    return Err(e.into());
                }
            };
            if let Some(h) = storing.take() {
                total += h
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))??;
                progress(&total);
            }
            let Some(batch) = next else {
                break;
            };
            self.dead_letter(&batch.rejects, dead_letters).await?;
            total.read += batch.read - batch.events.len() as u64;
            total.rejected += batch.rejects.len() as u64;
            let this = self.clone();
            storing = Some(tokio::spawn(async move { this.store(batch.events).await }));
        }
        Ok(total)
    }
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
}

/// A dead-letter sink decorator that tallies rejections by the field at
/// fault before passing each on, so a run can say why lines were refused
/// (`churn ingest` prints the top reasons).
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
        let batch = ingest.validate(records);
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
        let report = ingest.process(records(), &mut dlq).await.unwrap();
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
        let again = ingest.process(records(), &mut dlq).await.unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 2));
        assert_eq!(store.stats().await.unwrap().events, 2);
    }

    #[tokio::test]
    async fn a_store_outage_fails_the_batch_before_anything_is_dead_lettered() {
        let store = MemoryStore::new(3);
        store.outage.set_failing(true);
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 2);
        let mut dlq = MemoryDeadLetters::default();
        let err = ingest.process(records(), &mut dlq).await.unwrap_err();
        assert!(matches!(
            err,
            IngestError::Store(StoreError::Unavailable(_))
        ));
        assert!(dlq.rejected.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn store_all_writes_in_batch_size_chunks_and_sums_once() {
        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 3);
        let batch = ingest.validate(records());
        let events: Vec<Event> = batch.events.iter().cycle().take(7).cloned().collect();
        let total = ingest.store_all(events).await.unwrap();
        assert_eq!((total.read, total.inserted, total.duplicates), (7, 2, 5));
    }

    #[tokio::test]
    async fn rejections_are_tallied_by_field_and_passed_on() {
        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store), 86_400, 10);
        let mut dlq = MemoryDeadLetters::default();
        let mut tally = TallyRejects::new(&mut dlq);
        ingest.process(records(), &mut tally).await.unwrap();
        ingest.process(records(), &mut tally).await.unwrap();
        let reasons = tally.reasons();
        assert_eq!(reasons.len(), 2);
        assert_eq!((reasons[0].field, reasons[0].count), ("event_type", 2));
        assert!(reasons[0].example.starts_with("f:2: "), "{reasons:?}");
        assert_eq!((reasons[1].field, reasons[1].count), ("json", 2));
        assert_eq!(dlq.rejected.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn collected_rejects_are_bounded_but_all_counted() {
        let mut sink = CollectRejects::new(1);
        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store), 86_400, 10);
        let report = ingest.process(records(), &mut sink).await.unwrap();
        assert_eq!((report.rejected, sink.total, sink.notes.len()), (2, 2, 1));
        assert_eq!(sink.notes[0].origin, "f:2");
    }
}
