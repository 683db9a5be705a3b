//! The consumer's librdkafka callbacks: per-partition lag gauges from the
//! statistics, whether any broker is reachable, and rebalance logging.
//! They run on librdkafka's threads, so they only record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;

use crate::telemetry::metric_names;

/// Whether the consumer reaches its cluster, as librdkafka reports it:
/// "all brokers down" errors and each broker's state in the statistics.
#[derive(Debug, Default)]
pub struct Link {
    /// Since when no broker was reachable, while none is.
    down_since: Mutex<Option<Instant>>,
}

impl Link {
    fn set(&self, up: bool) {
        if let Ok(mut d) = self.down_since.lock() {
            match (up, *d) {
                (true, _) => *d = None,
                (false, None) => *d = Some(Instant::now()),
                (false, Some(_)) => {}
            }
        }
    }

    /// Marks the cluster reachable (a message arrived).
    pub fn reached(&self) {
        self.set(true);
    }

    /// How long no broker has been reachable, if none is.
    pub fn down_for(&self) -> Option<Duration> {
        self.down_since
            .lock()
            .ok()
            .and_then(|d| d.map(|since| since.elapsed()))
    }
}

/// Context of the churn consumer.
#[derive(Debug, Default)]
pub struct ConsumerCallbacks {
    pub link: Arc<Link>,
}

impl ClientContext for ConsumerCallbacks {
    fn stats(&self, statistics: Statistics) {
        // Real brokers only: the "logical" group coordinator and the
        // "internal" queue mirror or fake a state.
        let brokers: Vec<_> = statistics
            .brokers
            .values()
            .filter(|b| b.source != "internal" && b.source != "logical")
            .collect();
        if !brokers.is_empty() {
            self.link.set(brokers.iter().any(|b| b.state == "UP"));
        }
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue;
                // lag is -1 while unknown (not yet fetched or committed).
                if *partition < 0 || !p.desired || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    metric_names::KAFKA_CONSUMER_LAG,
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(p.consumer_lag as f64);
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.link.set(false);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for ConsumerCallbacks {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // With auto commit on, librdkafka commits the stored offsets of
        // revoked partitions before handing them over; offsets of a batch
        // still being written are not stored yet, so the next owner
        // re-reads it and the store dedups.
        match rebalance {
            Rebalance::Revoke(tpl) => {
                metrics::counter!(metric_names::KAFKA_REBALANCES_TOTAL, "kind" => "revoke")
                    .increment(1);
                for e in tpl.elements() {
                    tracing::info!(
                        topic = e.topic(),
                        partition = e.partition(),
                        "partition revoked"
                    );
                    metrics::gauge!(
                        metric_names::KAFKA_CONSUMER_LAG,
                        "topic" => e.topic().to_string(),
                        "partition" => e.partition().to_string()
                    )
                    .set(0.0);
                }
            }
            Rebalance::Assign(tpl) => {
                metrics::counter!(metric_names::KAFKA_REBALANCES_TOTAL, "kind" => "assign")
                    .increment(1);
                for e in tpl.elements() {
                    tracing::info!(
                        topic = e.topic(),
                        partition = e.partition(),
                        "partition assigned"
                    );
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}
