//! [`KafkaStream`]: a consumer-group member delivering batches of raw
//! messages to [`crate::application::stream_ingest::StreamIngest`].
//!
//! Offsets: `enable.auto.offset.store = false` and auto commit on. Offsets
//! are *stored* only in [`EventStream::commit`], which the loop calls with
//! a batch's checkpoint after that batch is durably written (the next
//! batch, already fetched, stays uncommitted); librdkafka then commits stored offsets every
//! `commit_interval_ms`, before a rebalance hands partitions away, and on
//! close. This is librdkafka's documented at-least-once pattern, and it
//! never blocks the runtime on a commit round trip.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaOptions;
use crate::application::ports::{EventStream, LogCheckpoint, LogPosition, RawRecord, SourceError};
use crate::infrastructure::kafka::client_config;
use crate::infrastructure::kafka::context::ConsumerCallbacks;
use crate::infrastructure::kafka::orphan::{Backlog, OrphanWatch, backlog};

/// How often a member that owns no partition reads the group's backlog.
const ORPHAN_CHECK_EVERY: Duration = Duration::from_secs(3);

/// How long no broker may be reachable before readiness says so.
const LINK_GRACE: Duration = Duration::from_secs(2);

/// A subscribed consumer-group member.
pub struct KafkaStream {
    consumer: Arc<StreamConsumer<ConsumerCallbacks>>,
    /// The literal topics subscribed (patterns are not watched).
    topics: Vec<String>,
    group: String,
    /// Whether records wait while this member owns nothing.
    orphan: OrphanWatch,
    /// A backlog reading under way (blocking calls, off the runtime).
    reading: Option<tokio::task::JoinHandle<rdkafka::error::KafkaResult<Backlog>>>,
    next_reading: Instant,
    /// How long records may wait unconsumed before it is a problem.
    orphan_grace: Duration,
    rejoined_at: Option<Instant>,
    /// Whether any broker is reachable (from the callbacks).
    link: std::sync::Arc<crate::infrastructure::kafka::context::Link>,
    /// Named in problems.
    brokers: String,
    /// Records that arrived while paused (kept, never dropped).
    held: VecDeque<RawRecord>,
    paused: bool,
}

pub(super) fn record_of(msg: &rdkafka::message::BorrowedMessage<'_>) -> RawRecord {
    let topic = msg.topic().to_string();
    let (partition, offset) = (msg.partition(), msg.offset());
    RawRecord {
        payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        origin: format!("{topic}/{partition}@{offset}"),
        key: msg.key().map(<[u8]>::to_vec),
        position: Some(LogPosition {
            topic,
            partition,
            offset,
        }),
    }
}

pub(super) fn source_error(context: &str, e: KafkaError) -> SourceError {
    SourceError::Io(format!("kafka {context}: {e}"))
}

impl KafkaStream {
    /// Creates the consumer and subscribes. Connecting is lazy: an
    /// unreachable cluster shows up as fetch errors, retried forever.
    ///
    /// # Errors
    /// Invalid client configuration or subscription.
    pub fn subscribe(settings: &KafkaOptions) -> Result<Self, SourceError> {
        let mut config = client_config(settings);
        config
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                settings.commit_interval_ms.to_string(),
            )
            .set("auto.offset.reset", &settings.auto_offset_reset)
            .set(
                "session.timeout.ms",
                settings.session_timeout_ms.to_string(),
            )
            .set(
                "max.poll.interval.ms",
                settings.max_poll_interval_ms.to_string(),
            )
            .set(
                "queued.max.messages.kbytes",
                settings.queued_max_kbytes.to_string(),
            )
            .set(
                "statistics.interval.ms",
                settings.statistics_interval_ms.to_string(),
            )
            // The classic protocol: the KIP-848 "consumer" protocol is not
            // implemented by every Kafka-protocol broker (tansu).
            .set("group.protocol", "classic")
            .set("partition.assignment.strategy", "cooperative-sticky");
        if !settings.group_instance_id.is_empty() {
            config.set("group.instance.id", &settings.group_instance_id);
        }
        let callbacks = ConsumerCallbacks::default();
        let link = callbacks.link.clone();
        let consumer: StreamConsumer<ConsumerCallbacks> = config
            .create_with_context(callbacks)
            .map_err(|e| source_error("consumer configuration", e))?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| source_error("subscribe", e))?;
        tracing::info!(brokers = %settings.brokers, group = %settings.group_id, ?topics, "kafka consumer subscribed");
        Ok(Self {
            consumer: Arc::new(consumer),
            topics: settings.topics.clone(),
            group: settings.group_id.clone(),
            orphan: OrphanWatch::default(),
            reading: None,
            next_reading: Instant::now() + ORPHAN_CHECK_EVERY,
            orphan_grace: Duration::from_millis(settings.session_timeout_ms.saturating_mul(2))
                .max(Duration::from_secs(5)),
            rejoined_at: None,
            link,
            brokers: settings.brokers.clone(),
            held: VecDeque::new(),
            paused: false,
        })
    }

    /// Watches for owning no partition while records wait (module
    /// `orphan`), and rejoins the group once they waited past the grace:
    /// a fresh member id makes the coordinator assign again. Never blocks:
    /// the reading runs on a blocking thread and is collected later.
    fn watch_orphan(&mut self) {
        let now = Instant::now();
        if let Some(reading) = &self.reading {
            if !reading.is_finished() {
                return;
            }
            if let Some(reading) = self.reading.take() {
                match futures::FutureExt::now_or_never(reading) {
                    Some(Ok(Ok(backlog))) => self.orphan.observe(backlog, now),
                    Some(Ok(Err(e))) => tracing::debug!(error = %e, "kafka backlog not read"),
                    _ => {}
                }
            }
        }
        if now < self.next_reading {
            return;
        }
        self.next_reading = now + ORPHAN_CHECK_EVERY;
        let owned = self
            .consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(true);
        if owned {
            self.orphan.owning();
            return;
        }
        if let Some((waited, unread)) = self.orphan.stuck(now)
            && waited >= self.orphan_grace
            && self
                .rejoined_at
                .is_none_or(|at| now.duration_since(at) >= self.orphan_grace)
        {
            tracing::warn!(
                group = %self.group,
                unread,
                waited_secs = waited.as_secs(),
                "kafka consumer owns no partition while records wait unconsumed: rejoining the group"
            );
            metrics::counter!(crate::telemetry::metric_names::KAFKA_REJOINS_TOTAL).increment(1);
            self.consumer.unsubscribe();
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            if let Err(e) = self.consumer.subscribe(&topics) {
                tracing::warn!(error = %e, "kafka resubscribe failed");
            }
            self.rejoined_at = Some(now);
        }
        let (consumer, topics) = (self.consumer.clone(), self.topics.clone());
        self.reading = Some(tokio::task::spawn_blocking(move || {
            backlog(&consumer, &topics, Duration::from_secs(5))
        }));
    }

    /// The current assignment, paused or resumed as a whole.
    fn set_paused(&self, pause: bool) -> Result<(), SourceError> {
        let assignment = self
            .consumer
            .assignment()
            .map_err(|e| source_error("assignment", e))?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        result.map_err(|e| source_error(if pause { "pause" } else { "resume" }, e))
    }
}

#[async_trait]
impl EventStream for KafkaStream {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<RawRecord>, SourceError> {
        self.watch_orphan();
        let take = self.held.len().min(max);
        let mut out: Vec<RawRecord> = self.held.drain(..take).collect();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        // One message stream for the whole batch: `recv()` builds (and
        // registers a waker for) a new one per message.
        let mut messages = self.consumer.stream();
        while out.len() < max {
            tokio::select! {
                biased;
                msg = messages.next() => match msg {
                    Some(Ok(msg)) => {
                        self.link.reached();
                        out.push(record_of(&msg));
                    }
                    // Records already read must reach the caller (the
                    // batch's checkpoint covers them); report the error
                    // later.
                    Some(Err(e)) if out.is_empty() => return Err(source_error("fetch", e)),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "kafka fetch error after a partial batch");
                        break;
                    }
                    // The stream never ends while the consumer lives.
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, through: &LogCheckpoint) -> Result<(), SourceError> {
        if through.is_empty() {
            return Ok(());
        }
        let assigned = self
            .consumer
            .assignment()
            .map_err(|e| source_error("assignment", e))?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in through.partitions() {
            // A partition revoked meanwhile belongs to another member now:
            // its offsets are abandoned and that member re-reads (deduped).
            if assigned.find_partition(topic, partition).is_some() {
                tpl.add_partition_offset(topic, partition, Offset::Offset(next))
                    .map_err(|e| source_error("offsets", e))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .store_offsets(&tpl)
            .map_err(|e| source_error("store offsets", e))
    }

    fn pause(&mut self) -> Result<(), SourceError> {
        self.paused = true;
        self.set_paused(true)
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        self.paused = false;
        self.set_paused(false)
    }

    async fn idle(&mut self, duration: Duration) {
        // Keep polling: a consumer that stops polling for
        // max.poll.interval.ms is expelled from the group. Paused partitions
        // deliver nothing; a partition assigned by a rebalance meanwhile
        // starts unpaused, so anything that arrives is held and the new
        // assignment paused too.
        let deadline = tokio::time::sleep(duration);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = self.consumer.recv() => match msg {
                    Ok(msg) => {
                        self.held.push_back(record_of(&msg));
                        if self.paused && let Err(e) = self.set_paused(true) {
                            tracing::warn!(error = %e, "re-pausing after a rebalance failed");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "kafka error while paused");
                        (&mut deadline).await;
                        return;
                    }
                },
                _ = &mut deadline => return,
            }
        }
    }

    fn problem(&self) -> Option<String> {
        // A blip is not a problem; a broker gone for a couple of seconds is.
        if let Some(down) = self.link.down_for().filter(|d| *d >= LINK_GRACE) {
            return Some(format!(
                "kafka: no broker reachable for {} s ({})",
                down.as_secs(),
                self.brokers
            ));
        }
        let (waited, unread) = self
            .orphan
            .stuck(Instant::now())
            .filter(|(w, _)| *w >= self.orphan_grace)?;
        Some(format!(
            "kafka: this consumer owns no partition of {} while {unread} records have waited \
             unconsumed for {} s (group {}; no member is consuming them): it rejoins the group \
             every {} s; with a broker that keeps a dead member's partitions, set \
             kafka.group_instance_id per replica",
            self.topics.join(","),
            waited.as_secs(),
            self.group,
            self.orphan_grace.as_secs()
        ))
    }

    async fn close(self: Box<Self>) {
        // Dropping the consumer closes it: librdkafka commits the stored
        // offsets and leaves the group, blocking while it does.
        let mut stream = *self;
        if let Some(reading) = stream.reading.take() {
            let _ = reading.await;
        }
        let _ = tokio::task::spawn_blocking(move || drop(stream)).await;
    }
}
