//! `IngestEvents`: validate raw records, append the valid ones to the event
//! store in batches, and send each invalid one to a dead-letter sink with its
//! reason. A bad record never stops the good ones around it.

use std::sync::Arc;

use serde::Serialize;

use crate::application::ports::{
    DeadLetterSink, EventSource, EventStore, RawRecord, SourceError, StoreError,
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

impl IngestReport {
    fn add(&mut self, other: IngestReport) {
        self.read += other.read;
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
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

/// Validation outcome of a batch of records, before storing.
pub struct Validated {
    pub events: Vec<Event>,
    pub rejects: Vec<(RawRecord, EventError)>,
}

/// The ingestion use case.
#[derive(Clone)]
pub struct IngestEvents {
    store: Arc<dyn EventStore>,
    max_future_secs: i64,
    batch_size: usize,
}

impl IngestEvents {
    pub fn new(store: Arc<dyn EventStore>, max_future_secs: i64, batch_size: usize) -> Self {
        Self {
            store,
            max_future_secs,
            batch_size: batch_size.max(1),
        }
    }

    fn policy(&self) -> TimePolicy {
        TimePolicy {
            now: chrono::Utc::now().timestamp(),
            max_future_secs: self.max_future_secs,
        }
    }

    /// Parses and validates records; pure apart from reading the clock.
    pub fn validate(&self, records: Vec<RawRecord>) -> Validated {
        let policy = self.policy();
        let mut events = Vec::with_capacity(records.len());
        let mut rejects = Vec::new();
        for record in records {
            match parse_event_json(&record.payload, policy) {
                Ok(e) => events.push(e),
                Err(err) => rejects.push((record, err)),
            }
        }
        Validated { events, rejects }
    }

    /// Stores already-validated events and records the metrics.
    ///
    /// # Errors
    /// [`StoreError`] when the batch could not be written (nothing was).
    pub async fn store(&self, events: Vec<Event>) -> Result<IngestReport, StoreError> {
        let read = events.len() as u64;
        let outcome = self.store.append(events).await?;
        metrics::counter!(names::EVENTS_INGESTED_TOTAL).increment(outcome.inserted);
        metrics::counter!(names::EVENTS_DUPLICATE_TOTAL).increment(outcome.duplicates);
        Ok(IngestReport {
            read,
            inserted: outcome.inserted,
            duplicates: outcome.duplicates,
            rejected: 0,
        })
    }

    /// Counts rejected records in the metrics, by the field at fault.
    pub fn count_rejects(rejects: &[(RawRecord, EventError)]) {
        for (_, err) in rejects {
            metrics::counter!(names::EVENTS_REJECTED_TOTAL, "field" => err.field()).increment(1);
        }
    }

    /// Drains a source: validate, store each batch, dead-letter the rejects,
    /// then commit the source (so a crash before the commit redelivers, and
    /// the idempotent store absorbs the repeats). `progress` is called after
    /// every batch with the running totals.
    ///
    /// # Errors
    /// [`IngestError`] if the store or the source fails; batches stored
    /// before the failure stay stored.
    pub async fn run(
        &self,
        source: &mut dyn EventSource,
        dead_letters: &mut dyn DeadLetterSink,
        mut progress: impl FnMut(&IngestReport) + Send,
    ) -> Result<IngestReport, IngestError> {
        let mut total = IngestReport::default();
        loop {
            let records = source.next_batch(self.batch_size).await?;
            if records.is_empty() {
                break;
            }
            let n = records.len() as u64;
            let Validated { events, rejects } = self.validate(records);
            let mut batch = self.store(events).await?;
            Self::count_rejects(&rejects);
            for (record, err) in &rejects {
                dead_letters.reject(record, err).await?;
            }
            dead_letters.flush().await?;
            source.commit().await?;
            batch.read = n;
            batch.rejected = rejects.len() as u64;
            total.add(batch);
            progress(&total);
        }
        Ok(total)
    }
}
