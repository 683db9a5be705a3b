//! [`KafkaDeadLetters`]: invalid messages re-produced, byte for byte with
//! their key, to the dead-letter topic, with why and where from in headers:
//!
//! | header | value |
//! |---|---|
//! | `churn.error` | the validation message |
//! | `churn.error_field` | the field at fault (`user_id`, `json`, ...) |
//! | `churn.source_topic` / `churn.source_partition` / `churn.source_offset` | the original position |
//! | `churn.origin` | the same, human-readable |
//! | `churn.rejected_at` | RFC 3339 time of rejection |
//! | `churn.truncated` / `churn.original_bytes` | only on a payload over [`MAX_PAYLOAD`]: its first bytes are kept |
//!
//! A payload over [`MAX_PAYLOAD`] is dead-lettered truncated: the producer
//! (and most brokers) refuse messages over ~1 MB, and a dead letter that
//! cannot be produced would hold its batch, and every offset after it, for
//! good. The original stays readable at its source position.

use async_trait::async_trait;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaOptions;
use crate::application::ports::{DeadLetterSink, RawRecord, SourceError};
use crate::domain::event::EventError;
use crate::infrastructure::kafka::producer_config;

/// Producer of dead letters; `flush` waits for every acknowledgement, so a
/// batch is committed only once its rejects are safely in the topic.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
    pending: Vec<DeliveryFuture>,
}

impl KafkaDeadLetters {
    /// # Errors
    /// Invalid producer configuration.
    pub fn new(settings: &KafkaOptions) -> Result<Self, SourceError> {
        let producer = producer_config(settings)
            .create()
            .map_err(|e| SourceError::Io(format!("kafka dead-letter producer: {e}")))?;
        Ok(Self {
            producer,
            topic: settings.dlq_topic.clone(),
            pending: Vec::new(),
        })
    }
}

/// Largest payload dead-lettered whole: half the default `message.max.bytes`
/// of producers and brokers (1,000,000), leaving room for headers.
pub const MAX_PAYLOAD: usize = 512 * 1024;

/// The payload to dead-letter, and the original size when it was cut.
fn dead_letter_payload(payload: &[u8]) -> (&[u8], Option<usize>) {
    if payload.len() > MAX_PAYLOAD {
        (&payload[..MAX_PAYLOAD], Some(payload.len()))
    } else {
        (payload, None)
    }
}

fn headers(record: &RawRecord, error: &EventError, cut_from: Option<usize>) -> OwnedHeaders {
    let message = error.to_string();
    let rejected_at = crate::domain::time::format_rfc3339(chrono::Utc::now().timestamp());
    let mut h = OwnedHeaders::new_with_capacity(7)
        .insert(Header {
            key: "churn.error",
            value: Some(message.as_str()),
        })
        .insert(Header {
            key: "churn.error_field",
            value: Some(error.field()),
        })
        .insert(Header {
            key: "churn.origin",
            value: Some(record.origin.as_str()),
        })
        .insert(Header {
            key: "churn.rejected_at",
            value: Some(rejected_at.as_str()),
        });
    if let Some(original) = cut_from {
        let original = original.to_string();
        h = h
            .insert(Header {
                key: "churn.truncated",
                value: Some("true"),
            })
            .insert(Header {
                key: "churn.original_bytes",
                value: Some(original.as_str()),
            });
    }
    if let Some(p) = &record.position {
        let (partition, offset) = (p.partition.to_string(), p.offset.to_string());
        h = h
            .insert(Header {
                key: "churn.source_topic",
                value: Some(p.topic.as_str()),
            })
            .insert(Header {
                key: "churn.source_partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "churn.source_offset",
                value: Some(offset.as_str()),
            });
    }
    h
}

#[async_trait]
impl DeadLetterSink for KafkaDeadLetters {
    async fn reject(&mut self, record: &RawRecord, error: &EventError) -> Result<(), SourceError> {
        let (payload, cut_from) = dead_letter_payload(&record.payload);
        if let Some(bytes) = cut_from {
            tracing::warn!(origin = %record.origin, bytes, "dead-lettering an oversized message truncated");
        }
        let mut message = FutureRecord::to(&self.topic)
            .payload(payload)
            .headers(headers(record, error, cut_from));
        if let Some(key) = &record.key {
            message = message.key(key.as_slice());
        }
        loop {
            match self.producer.send_result(message) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    return Ok(());
                }
                // The local queue is full: let deliveries drain, then retry.
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    m,
                )) => {
                    message = m;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    return Err(SourceError::Io(format!(
                        "kafka dead letter to {}: {e}",
                        self.topic
                    )));
                }
            }
        }
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        let mut first_error = None;
        for delivery in self.pending.drain(..) {
            let outcome = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "producer dropped the message".to_string(),
            };
            first_error.get_or_insert(outcome);
        }
        match first_error {
            // The whole batch is retried: the delivered part is produced
            // again (dead letters are at-least-once too).
            Some(e) => Err(SourceError::Io(format!(
                "kafka dead letter to {}: {e}",
                self.topic
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_over_the_limit_are_cut_and_say_so() {
        let small = vec![b'x'; MAX_PAYLOAD];
        assert_eq!(dead_letter_payload(&small), (small.as_slice(), None));
        let big = vec![b'y'; 3 * 1024 * 1024];
        let (kept, cut) = dead_letter_payload(&big);
        assert_eq!(kept.len(), MAX_PAYLOAD);
        assert_eq!(cut, Some(big.len()));
    }
}
