//! Kafka adapters on `rdkafka` (bundled librdkafka): the consumer-group
//! [`consumer::KafkaStream`], the dead-letter producer
//! [`dead_letters::KafkaDeadLetters`] and the demo-event producer
//! [`producer::EventProducer`]. Only this module names rdkafka.

pub mod consumer;
pub mod context;
pub mod dead_letters;
pub mod producer;

use rdkafka::ClientConfig;
use secrecy::ExposeSecret;

use crate::config::KafkaSettings;

/// Connection settings shared by consumers and producers.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
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
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("acks", "all")
        .set("compression.type", &settings.compression)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    config
}
