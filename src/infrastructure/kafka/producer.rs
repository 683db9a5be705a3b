//! [`EventProducer`]: JSON events to the events topic (`churn
//! generate-events --to kafka`, tests, benchmarks), keyed by user id so a
//! user's events stay in order within one partition. Synchronous on
//! purpose: the generator is a plain callback, and librdkafka batches and
//! sends on its own thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::KafkaOptions;
use crate::infrastructure::kafka::producer_config;

/// Acknowledged and failed deliveries, counted on librdkafka's thread.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct Deliveries(Arc<DeliveryCounts>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Errors of producing events.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{failed} of {sent} messages were not acknowledged (first error: {first})")]
    Undelivered {
        sent: u64,
        failed: u64,
        first: String,
    },
}

/// Totals of a produce run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProduceReport {
    pub sent: u64,
    pub delivered: u64,
    pub seconds: f64,
}

/// Producer of JSON events to one topic, optionally rate-limited.
pub struct EventProducer {
    producer: ThreadedProducer<Deliveries>,
    deliveries: Deliveries,
    topic: String,
    /// Messages per second; `None` = as fast as the broker takes them.
    rate: Option<f64>,
    sent: u64,
    started: Instant,
}

impl EventProducer {
    /// # Errors
    /// Invalid producer configuration.
    pub fn new(
        settings: &KafkaOptions,
        topic: &str,
        rate: Option<f64>,
    ) -> Result<Self, ProduceError> {
        let deliveries = Deliveries::default();
        let producer = producer_config(settings).create_with_context(deliveries.clone())?;
        Ok(Self {
            producer,
            deliveries,
            topic: topic.to_string(),
            rate: rate.filter(|r| *r > 0.0),
            sent: 0,
            started: Instant::now(),
        })
    }

    /// Queues one message (blocking while librdkafka's queue is full or the
    /// rate limit says wait).
    ///
    /// # Errors
    /// A non-retriable producer error.
    pub fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<(), ProduceError> {
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.sent += 1;
        Ok(())
    }

    /// Waits until every queued message is acknowledged or failed.
    ///
    /// # Errors
    /// Any message not acknowledged by the broker.
    pub fn finish(self, timeout: Duration) -> Result<ProduceReport, ProduceError> {
        self.producer.flush(timeout)?;
        let counts = &self.deliveries.0;
        let failed = counts.failed.load(Ordering::Relaxed);
        let delivered = counts.delivered.load(Ordering::Relaxed);
        if failed > 0 || delivered < self.sent {
            let first = counts
                .first_error
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_else(|| "not acknowledged before the timeout".into());
            return Err(ProduceError::Undelivered {
                sent: self.sent,
                failed: self.sent - delivered,
                first,
            });
        }
        Ok(ProduceReport {
            sent: self.sent,
            delivered,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}
