//! `StreamIngest`: the long-running consumer loop over an [`EventStream`]
//! (a Kafka consumer group).
//!
//! Delivery is at-least-once: a batch is committed only after its valid
//! events are durably stored *and* its invalid ones are dead-lettered. A
//! crash anywhere before the commit redelivers the batch, and the store
//! recognises the repeats (by log position, or by event identity) and does
//! not store them again. The next batch is fetched while one is stored.
//!
//! While the store (or the dead-letter sink) fails, the loop pauses the
//! stream, retries the same batch with capped exponential backoff and reads
//! nothing more, so memory stays bounded by two batches; [`IngestHealth`]
//! tells `/readyz` why. A bad record never blocks the records around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::application::ingest::{Batch, Delivery, IngestEvents, IngestReport, SourceKind, Stored};
use crate::application::ports::{DeadLetterSink, EventStream, LogCheckpoint, StoreError};
use crate::telemetry::metric_names;

/// Batching and retry settings of the loop.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Largest batch handed to the store.
    pub batch_max_events: usize,
    /// Longest wait for a batch to fill (bounds ingestion latency).
    pub batch_max_wait: Duration,
    /// First retry delay after a failed write; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// Shared, cheap-to-read state of the consumer for readiness probes.
#[derive(Debug, Clone, Default)]
pub struct IngestHealth {
    inner: Arc<HealthInner>,
}

#[derive(Debug, Default)]
struct HealthInner {
    running: AtomicBool,
    paused: AtomicBool,
    problem: std::sync::Mutex<Option<String>>,
    /// What keeps the stream from its source ([`EventStream::problem`]).
    source: std::sync::Mutex<Option<String>>,
}

impl IngestHealth {
    /// Whether a stream consumer runs in this process.
    pub fn running(&self) -> bool {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// Why consumption is paused, if it is.
    pub fn paused_because(&self) -> Option<String> {
        if !self.inner.paused.load(Ordering::Relaxed) {
            return None;
        }
        self.inner
            .problem
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// What keeps the consumer from its source (no broker reachable), if
    /// anything.
    pub fn source_problem(&self) -> Option<String> {
        self.inner
            .source
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn set_source_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.inner.source.lock()
            && *p != problem
        {
            match &problem {
                Some(problem) => tracing::warn!(%problem, "event stream cannot reach its source"),
                None => tracing::info!("event stream reaches its source again"),
            }
            *p = problem;
        }
    }

    fn set_running(&self, running: bool) {
        self.inner.running.store(running, Ordering::Relaxed);
    }

    fn pause(&self, problem: String) {
        if let Ok(mut p) = self.inner.problem.lock() {
            *p = Some(problem);
        }
        self.inner.paused.store(true, Ordering::Relaxed);
        metrics::gauge!(metric_names::STREAM_PAUSED).set(1.0);
    }

    fn resume(&self) {
        self.inner.paused.store(false, Ordering::Relaxed);
        if let Ok(mut p) = self.inner.problem.lock() {
            *p = None;
        }
        metrics::gauge!(metric_names::STREAM_PAUSED).set(0.0);
    }
}

/// The stream-ingestion use case.
#[derive(Clone)]
pub struct StreamIngest {
    ingest: IngestEvents,
    options: StreamOptions,
    health: IngestHealth,
}

/// A validated batch and how far it reaches in the log.
struct Fetched {
    batch: Arc<Batch>,
    through: LogCheckpoint,
}

/// A batch whose write runs in its own task.
struct InFlight {
    write: tokio::task::JoinHandle<Result<Stored, StoreError>>,
    batch: Arc<Batch>,
    through: LogCheckpoint,
}

/// Capped exponential backoff between retries of one batch.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(options: &StreamOptions) -> Self {
        Self {
            next: options.retry_initial,
            max: options.retry_max.max(options.retry_initial),
        }
    }

    fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

impl StreamIngest {
    pub fn new(ingest: IngestEvents, options: StreamOptions, health: IngestHealth) -> Self {
        Self {
            ingest,
            options,
            health,
        }
    }

    pub fn health(&self) -> &IngestHealth {
        &self.health
    }

    /// Consumes until `shutdown` is cancelled, then closes the stream (which
    /// commits what was processed). Returns the totals of the run.
    ///
    /// Batches overlap: while one is being stored, the next is fetched and
    /// validated, so the store's round trip and the broker's fetch are not
    /// paid one after the other. At most two batches are held; each is
    /// committed (its own checkpoint, never the next batch's) only once it
    /// and every batch before it are stored.
    pub async fn run(
        &self,
        mut stream: Box<dyn EventStream>,
        dead_letters: &mut dyn DeadLetterSink,
        shutdown: CancellationToken,
    ) -> IngestReport {
        self.health.set_running(true);
        let mut total = IngestReport::default();
        let mut in_flight: Option<InFlight> = None;
        while !shutdown.is_cancelled() {
            let next = self.fetch(&mut *stream, &shutdown).await;
            self.health.set_source_problem(stream.problem());
            if let Some(previous) = in_flight.take() {
                match self
                    .complete(previous, &mut *stream, dead_letters, &shutdown)
                    .await
                {
                    Some(report) => total += report,
                    // Shutdown interrupted a batch that is neither stored
                    // nor dead-lettered: a later batch's offsets cover it
                    // (an offset commits everything before it on its
                    // partition), so nothing after it may be committed.
                    // The fetched batch is dropped unwritten; all of it is
                    // redelivered on restart.
                    None => {
                        in_flight = None;
                        break;
                    }
                }
            }
            in_flight = next.map(|f| self.start(f));
        }
        // A write already under way finishes, so what it stored is
        // committed now rather than redelivered.
        if let Some(last) = in_flight.take()
            && let Some(report) = self
                .complete(last, &mut *stream, dead_letters, &shutdown)
                .await
        {
            total += report;
        }
        stream.close().await;
        self.health.set_source_problem(None);
        self.health.set_running(false);
        tracing::info!(?total, "stream consumer stopped");
        total
    }

    /// Reads and validates one batch. `None` when there was nothing to do
    /// or shutdown interrupted the read.
    async fn fetch(
        &self,
        stream: &mut dyn EventStream,
        shutdown: &CancellationToken,
    ) -> Option<Fetched> {
        let records = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = stream.next_batch(self.options.batch_max_events, self.options.batch_max_wait) => r,
        };
        let records = match records {
            Ok(r) if r.is_empty() => return None,
            Ok(r) => r,
            Err(e) => {
                // The client reconnects by itself; keep polling, slowly.
                metrics::counter!(metric_names::STREAM_ERRORS_TOTAL, "stage" => "fetch")
                    .increment(1);
                tracing::warn!(error = %e, "event stream fetch failed");
                self.wait(stream, self.options.retry_initial, shutdown)
                    .await;
                return None;
            }
        };
        metrics::counter!(metric_names::STREAM_RECORDS_TOTAL).increment(records.len() as u64);
        let through = LogCheckpoint::after(&records);
        // Streamed records take their identity from their log position:
        // the delivery carries no state across batches here.
        let mut delivery = Delivery::new(SourceKind::Kafka);
        Some(Fetched {
            batch: Arc::new(self.ingest.prepare(records, &mut delivery)),
            through,
        })
    }

    /// Starts storing a fetched batch in its own task.
    fn start(&self, fetched: Fetched) -> InFlight {
        let (ingest, batch) = (self.ingest.clone(), fetched.batch.clone());
        InFlight {
            write: tokio::spawn(async move { ingest.store_batch(&batch).await }),
            batch: fetched.batch,
            through: fetched.through,
        }
    }

    /// Waits for a batch's write (retrying it while the store fails),
    /// dead-letters its rejects and commits it. `None` when shutdown
    /// interrupted the retries (uncommitted: it is redelivered).
    async fn complete(
        &self,
        in_flight: InFlight,
        stream: &mut dyn EventStream,
        dead_letters: &mut dyn DeadLetterSink,
        shutdown: &CancellationToken,
    ) -> Option<IngestReport> {
        let InFlight {
            write,
            batch,
            through,
        } = in_flight;
        let mut attempt = match write.await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Unavailable(format!("store task failed: {e}"))),
        };
        let mut backoff = Backoff::new(&self.options);
        let mut paused = false;
        let stored = loop {
            match attempt {
                Ok(report) => break report,
                Err(e) => {
                    if !self
                        .hold(stream, &mut paused, &mut backoff, "store", &e, shutdown)
                        .await
                    {
                        return None;
                    }
                    // The same batch again: the positions let the store
                    // recognise records of a batch it already wrote.
                    attempt = self.ingest.store_batch(&batch).await;
                }
            }
        };
        let rejects: std::borrow::Cow<'_, [_]> = if stored.refused.is_empty() {
            std::borrow::Cow::Borrowed(&batch.rejects[..])
        } else {
            std::borrow::Cow::Owned(
                batch
                    .rejects
                    .iter()
                    .chain(&stored.refused)
                    .cloned()
                    .collect(),
            )
        };
        loop {
            match self
                .ingest
                .dead_letter(SourceKind::Kafka, &rejects, dead_letters)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    if !self
                        .hold(
                            stream,
                            &mut paused,
                            &mut backoff,
                            "dead_letter",
                            &e,
                            shutdown,
                        )
                        .await
                    {
                        return None;
                    }
                }
            }
        }
        if paused {
            if let Err(e) = stream.resume() {
                tracing::warn!(error = %e, "resuming the event stream failed");
            }
            self.health.resume();
            tracing::info!("event store recovered: consumption resumed");
        }
        if let Err(e) = stream.commit(&through).await {
            // Not fatal: the batch is stored, so a redelivery is absorbed.
            metrics::counter!(metric_names::STREAM_ERRORS_TOTAL, "stage" => "commit").increment(1);
            tracing::warn!(error = %e, "offset commit failed; the batch may be redelivered");
        }
        Some(stored.report(&batch))
    }

    /// After a failed write: pause the stream (first time), report, and wait
    /// one backoff step. `false` when shutdown interrupted the wait.
    async fn hold(
        &self,
        stream: &mut dyn EventStream,
        paused: &mut bool,
        backoff: &mut Backoff,
        stage: &'static str,
        error: &(dyn std::fmt::Display + Sync),
        shutdown: &CancellationToken,
    ) -> bool {
        metrics::counter!(metric_names::STREAM_ERRORS_TOTAL, "stage" => stage).increment(1);
        let delay = backoff.step();
        if !*paused {
            if let Err(e) = stream.pause() {
                tracing::warn!(error = %e, "pausing the event stream failed");
            }
            *paused = true;
        }
        let problem = match stage {
            "store" => format!("event store: {error}"),
            _ => format!("dead-letter sink: {error}"),
        };
        tracing::warn!(%problem, ?delay, "consumption paused; retrying the batch");
        self.health.pause(problem);
        self.health.set_source_problem(stream.problem());
        self.wait(stream, delay, shutdown).await
    }

    async fn wait(
        &self,
        stream: &mut dyn EventStream,
        delay: Duration,
        shutdown: &CancellationToken,
    ) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = stream.idle(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(&StreamOptions {
            batch_max_events: 1,
            batch_max_wait: Duration::from_millis(1),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(350),
        });
        let steps: Vec<u128> = (0..5).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, vec![100, 200, 350, 350, 350]);
    }

    #[test]
    fn health_reports_the_pause_reason_until_resumed() {
        let h = IngestHealth::default();
        assert_eq!(h.paused_because(), None);
        h.pause("event store: down".into());
        assert_eq!(h.paused_because().as_deref(), Some("event store: down"));
        h.resume();
        assert_eq!(h.paused_because(), None);
    }

    fn logged(offset: i64) -> crate::application::ports::RawRecord {
        use crate::application::ports::{LogPosition, RawRecord};
        RawRecord {
            payload: format!(
                r#"{{"user_id":{},"event_time":"2026-01-01 10:00:00","event_type":"login"}}"#,
                offset + 1
            )
            .into_bytes(),
            origin: format!("events/0@{offset}"),
            position: Some(LogPosition {
                topic: "events".into(),
                partition: 0,
                offset,
            }),
            key: None,
        }
    }

    fn checkpoint(next: i64) -> LogCheckpoint {
        LogCheckpoint::after(&[logged(next - 1)])
    }

    /// Paused time: batches overlap (the second is fetched while the first
    /// is written), yet each commit carries only its own batch's offsets,
    /// in order, and only after that batch is stored — also when the first
    /// write fails and is retried after the second batch was fetched.
    #[tokio::test(start_paused = true)]
    async fn each_commit_covers_only_batches_already_stored() {
        use crate::application::ports::EventStore;
        use crate::testing::{MemoryDeadLetters, MemoryStore, ScriptedStream};

        for outage in [false, true] {
            let store = MemoryStore::new(3);
            store.outage.set_failing(outage);
            let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 100);
            let stream = ScriptedStream::new(vec![
                (0..3).map(logged).collect(),
                (3..7).map(logged).collect(),
            ]);
            let log = stream.log.clone();
            let consumer = StreamIngest::new(
                ingest,
                StreamOptions {
                    batch_max_events: 10,
                    batch_max_wait: Duration::from_millis(50),
                    retry_initial: Duration::from_millis(100),
                    retry_max: Duration::from_millis(400),
                },
                IngestHealth::default(),
            );
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            let task = tokio::spawn(async move {
                consumer
                    .run(Box::new(stream), &mut MemoryDeadLetters::default(), stop)
                    .await
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            if outage {
                // Both batches fetched, nothing stored, nothing committed.
                assert_eq!(log.lock().unwrap().fetched, 7);
                assert!(log.lock().unwrap().committed.is_empty());
                store.outage.set_failing(false);
            }
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            assert_eq!(
                log.lock().unwrap().committed,
                vec![checkpoint(3), checkpoint(7)],
                "outage {outage}"
            );
            shutdown.cancel();
            let total = task.await.unwrap();
            assert_eq!((total.read, total.inserted), (7, 7));
            assert_eq!(store.stats().await.unwrap().events, 7);
        }
    }

    /// Paused time: a batch whose reject cannot be dead-lettered (a message
    /// over the dead-letter topic's size limit) is retried until shutdown,
    /// and the next batch — fetched and stored meanwhile — is not committed
    /// either: its offsets would cover the first batch's record, which
    /// would then be neither stored nor dead-lettered (it was, 2 of 2).
    #[tokio::test(start_paused = true)]
    async fn nothing_is_committed_past_a_batch_neither_stored_nor_dead_lettered() {
        use crate::testing::{MemoryDeadLetters, MemoryStore, ScriptedStream};

        let store = MemoryStore::new(3);
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 100);
        let mut poison = logged(0);
        poison.payload = b"{not json".to_vec();
        let stream = ScriptedStream::new(vec![vec![poison], (1..4).map(logged).collect()]);
        let log = stream.log.clone();
        let consumer = StreamIngest::new(
            ingest,
            StreamOptions {
                batch_max_events: 1,
                batch_max_wait: Duration::from_millis(50),
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_millis(400),
            },
            IngestHealth::default(),
        );
        let dlq = MemoryDeadLetters::default();
        dlq.refusing.store(true, Ordering::Relaxed);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let mut sink = dlq.clone();
        let task =
            tokio::spawn(async move { consumer.run(Box::new(stream), &mut sink, stop).await });
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert!(
            log.lock().unwrap().fetched >= 2,
            "the next batch was fetched"
        );
        shutdown.cancel();
        task.await.unwrap();
        let log = log.lock().unwrap();
        assert!(
            log.committed.is_empty(),
            "committed past the undelivered record: {:?}",
            log.committed
        );
        assert!(log.closed);
    }

    #[test]
    fn a_checkpoint_is_the_offset_after_each_partitions_last_record() {
        use crate::application::ports::{LogPosition, RawRecord};
        let at = |partition: i32, offset: i64| RawRecord {
            position: Some(LogPosition {
                topic: "events".into(),
                partition,
                offset,
            }),
            ..RawRecord::new(Vec::new(), "")
        };
        let c = LogCheckpoint::after(&[at(0, 5), at(1, 9), at(0, 7), at(0, 6)]);
        assert_eq!(
            c.partitions().collect::<Vec<_>>(),
            vec![("events", 0, 8), ("events", 1, 10)]
        );
        assert!(LogCheckpoint::after(&[RawRecord::new(Vec::new(), "f:1")]).is_empty());
    }

    /// Paused time: a store outage pauses the stream and retries the same
    /// batch with doubling delays; once the store is back the batch is
    /// stored exactly once, committed, and the stream resumed.
    #[tokio::test(start_paused = true)]
    async fn a_store_outage_pauses_retries_with_backoff_and_loses_nothing() {
        use crate::application::ports::{EventStore, RawRecord};
        use crate::testing::{MemoryDeadLetters, MemoryStore, ScriptedStream};

        let store = MemoryStore::new(3);
        store.outage.set_failing(true);
        let ingest = IngestEvents::new(Arc::new(store.clone()), 86_400, 100);
        let line = |u: u64| {
            RawRecord::new(
                format!(
                    r#"{{"user_id":{u},"event_time":"2026-01-01 10:00:00","event_type":"login"}}"#
                )
                .into_bytes(),
                format!("events/0@{u}"),
            )
        };
        let stream = ScriptedStream::new(vec![vec![
            line(1),
            line(2),
            RawRecord::new(b"{".to_vec(), "events/0@3"),
        ]]);
        let log = stream.log.clone();
        let health = IngestHealth::default();
        let consumer = StreamIngest::new(
            ingest,
            StreamOptions {
                batch_max_events: 10,
                batch_max_wait: Duration::from_millis(50),
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_millis(400),
            },
            health.clone(),
        );
        let shutdown = CancellationToken::new();
        let mut dlq = MemoryDeadLetters::default();
        let rejected = dlq.rejected.clone();
        let stop = shutdown.clone();
        let task =
            tokio::spawn(async move { consumer.run(Box::new(stream), &mut dlq, stop).await });
        // Retries at 100, 200, 400, 400 ms: still failing at 1 s.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(
            health
                .paused_because()
                .is_some_and(|p| p.contains("simulated outage"))
        );
        assert_eq!(log.lock().unwrap().pauses, 1, "paused once, not per retry");
        assert_eq!(
            log.lock().unwrap().commits,
            0,
            "nothing committed while failing"
        );
        store.outage.set_failing(false);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(health.paused_because(), None);
        {
            let log = log.lock().unwrap();
            assert_eq!((log.resumes, log.commits), (1, 1));
        }
        shutdown.cancel();
        let total = task.await.unwrap();
        assert_eq!((total.read, total.inserted, total.rejected), (3, 2, 1));
        assert_eq!(store.stats().await.unwrap().events, 2);
        assert_eq!(rejected.lock().unwrap().len(), 1);
        assert!(log.lock().unwrap().closed);
    }
}
