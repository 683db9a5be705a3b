//! Kafka adapters on `rdkafka` (bundled librdkafka): the consumer-group
//! [`consumer::KafkaStream`], the dead-letter producer
//! [`dead_letters::KafkaDeadLetters`] and the demo-event producer
//! [`producer::EventProducer`]. Only this module names rdkafka.

pub mod consumer;
pub mod context;
pub mod dead_letters;
pub mod live_watch;
pub mod orphan;
pub mod producer;

use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};

/// What the Kafka adapters need to know (mapped from `[kafka]` by
/// `startup`; the adapters never see the settings tree).
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    pub client_id: String,
    pub security_protocol: String,
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: SecretString,
    pub group_id: String,
    /// Topics; an entry starting with `^` is a pattern.
    pub topics: Vec<String>,
    pub dlq_topic: String,
    pub auto_offset_reset: String,
    pub commit_interval_ms: u64,
    pub session_timeout_ms: u64,
    pub max_poll_interval_ms: u64,
    pub queued_max_kbytes: u64,
    pub statistics_interval_ms: u64,
    /// Empty = dynamic group membership.
    pub group_instance_id: String,
    /// Producer compression: none, gzip or lz4.
    pub compression: String,
}

/// Connection settings shared by consumers and producers.
pub fn client_config(settings: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", settings.brokers.trim())
        .set("client.id", &settings.client_id)
        .set("security.protocol", &settings.security_protocol);
    if settings.security_protocol.starts_with("sasl") {
        config
            .set("sasl.mechanism", &settings.sasl_mechanism)
            .set("sasl.username", &settings.sasl_username)
            .set("sasl.password", settings.sasl_password.expose_secret());
    }
    config
}

/// Producer settings: every message acknowledged by all in-sync replicas,
/// idempotent-safe retries, the configured compression.
pub fn producer_config(settings: &KafkaOptions) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("acks", "all")
        .set("compression.type", &settings.compression)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    config
}
