//! `[kafka]`: the consumer of `churn serve` and the producer of
//! `churn generate-events --to kafka`; off while `brokers` is empty.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, redact};

/// The Kafka consumer of `churn serve` and `churn generate-events --to kafka`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated; empty = no Kafka consumer.
    pub brokers: String,
    /// Consumer group: replicas with the same group share the partitions.
    pub group_id: String,
    /// Topics to consume; an entry starting with `^` is a regex pattern.
    pub topics: Vec<String>,
    /// Where invalid messages go, with the reason in headers.
    pub dlq_topic: String,
    pub client_id: String,
    /// Where a new group starts: "earliest" or "latest".
    pub auto_offset_reset: String,
    /// Largest batch written to the store at once.
    pub batch_max_events: usize,
    /// Longest wait for a batch to fill, in milliseconds.
    pub batch_max_wait_ms: u64,
    /// How often processed offsets are committed, in milliseconds.
    pub commit_interval_ms: u64,
    pub session_timeout_ms: u64,
    /// A member that does not poll for this long leaves the group; also how
    /// long a rebalance waits for members to rejoin.
    pub max_poll_interval_ms: u64,
    /// Static membership (KIP-345): a stable id per replica (e.g. the pod
    /// name) lets a restarted replica take its partitions back without a
    /// rebalance. Empty = dynamic membership.
    pub group_instance_id: String,
    /// Prefetch cap of the consumer queue (bounds memory while the store is slow).
    pub queued_max_kbytes: u64,
    /// Consumer statistics (lag metrics) interval; 0 = off.
    pub statistics_interval_ms: u64,
    /// First and largest delay between retries of a failed store write.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Producer compression: none, gzip or lz4 (not snappy: tansu cannot
    /// read it back; zstd is not compiled in).
    pub compression: String,
    /// "plaintext", "ssl", "sasl_plaintext" or "sasl_ssl".
    pub security_protocol: String,
    /// SASL mechanism when security_protocol is sasl_*: "PLAIN", "SCRAM-SHA-256", ...
    pub sasl_mechanism: String,
    pub sasl_username: String,
    /// Set through `CHURN_KAFKA__SASL_PASSWORD`, never in a committed file.
    #[serde(serialize_with = "redact")]
    pub sasl_password: SecretString,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            group_id: "churn".into(),
            topics: vec!["events".into()],
            dlq_topic: "events_dlq".into(),
            client_id: "churn".into(),
            auto_offset_reset: "earliest".into(),
            batch_max_events: 100_000,
            batch_max_wait_ms: 500,
            commit_interval_ms: 1_000,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 60_000,
            group_instance_id: String::new(),
            queued_max_kbytes: 65_536,
            statistics_interval_ms: 5_000,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            compression: "lz4".into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: SecretString::from(String::new()),
        }
    }
}

impl KafkaSettings {
    /// Whether a Kafka cluster is configured.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        if self.group_id.is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return Err(invalid("kafka.topics", "list at least one topic"));
        }
        if self.dlq_topic.is_empty() || self.topics.contains(&self.dlq_topic) {
            return Err(invalid(
                "kafka.dlq_topic",
                "must be set and not be one of kafka.topics (a loop)",
            ));
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(invalid(
                "kafka.auto_offset_reset",
                "must be \"earliest\" or \"latest\"",
            ));
        }
        // Numbers are range-checked with every other setting (ranges.rs).
        if !matches!(self.compression.as_str(), "none" | "gzip" | "lz4") {
            return Err(invalid("kafka.compression", "must be none, gzip or lz4"));
        }
        if !matches!(
            self.security_protocol.as_str(),
            "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
        ) {
            return Err(invalid(
                "kafka.security_protocol",
                "must be plaintext, ssl, sasl_plaintext or sasl_ssl",
            ));
        }
        Ok(())
    }
}
