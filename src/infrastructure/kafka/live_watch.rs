//! [`KafkaLogWatch`]: this replica's own read of every partition of the
//! ingest topics, for live features ([`crate::application::live_watch`]).
//!
//! Outside the consumer group that stores events: partitions are
//! *assigned* (no group membership, so no rebalance of the storing group)
//! from the end of the log, nothing is committed. A second client under
//! the storing group's id only fetches that group's committed offsets
//! (an OffsetFetch request: it never joins the group).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaOptions;
use super::consumer::{record_of, source_error};
use crate::application::ports::{LogWatch, RawRecord, SourceError};
use crate::infrastructure::kafka::client_config;

/// Bound on each metadata and offset request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaLogWatch {
    reader: Arc<StreamConsumer>,
    group: Arc<BaseConsumer>,
    topics: Vec<String>,
    /// Every watched partition, once assigned.
    watched: Option<TopicPartitionList>,
}

impl KafkaLogWatch {
    /// Creates both clients; partitions are looked up and assigned on the
    /// first read (connecting is lazy, as for the group consumer).
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn new(settings: &KafkaOptions) -> Result<Self, SourceError> {
        let mut config = client_config(settings);
        config
            // Required by the client; never joined or committed under.
            .set("group.id", format!("{}.live-watch", settings.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set(
                "queued.max.messages.kbytes",
                settings.queued_max_kbytes.to_string(),
            );
        let reader: StreamConsumer = config
            .create()
            .map_err(|e| source_error("live watch configuration", e))?;
        let mut config = client_config(settings);
        config
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false");
        let group: BaseConsumer = config
            .create()
            .map_err(|e| source_error("live watch group client", e))?;
        let topics: Vec<String> = settings
            .topics
            .iter()
            .filter(|t| {
                let pattern = t.starts_with('^');
                if pattern {
                    tracing::warn!(topic = %t, "live features do not watch topic patterns: another replica's events on them wait for their rows to expire");
                }
                !pattern
            })
            .cloned()
            .collect();
        Ok(Self {
            reader: Arc::new(reader),
            group: Arc::new(group),
            topics,
            watched: None,
        })
    }

    /// Every partition of the watched topics, assigned at the log's end.
    async fn assign(&mut self) -> Result<(), SourceError> {
        let reader = Arc::clone(&self.reader);
        let topics = self.topics.clone();
        let tpl =
            tokio::task::spawn_blocking(move || -> Result<TopicPartitionList, SourceError> {
                let mut tpl = TopicPartitionList::new();
                for topic in &topics {
                    let metadata = reader
                        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                        .map_err(|e| source_error("live watch metadata", e))?;
                    for t in metadata.topics() {
                        for p in t.partitions() {
                            tpl.add_partition_offset(t.name(), p.id(), Offset::End)
                                .map_err(|e| source_error("live watch offsets", e))?;
                        }
                    }
                }
                reader
                    .assign(&tpl)
                    .map_err(|e| source_error("live watch assign", e))?;
                Ok(tpl)
            })
            .await
            .map_err(|e| SourceError::Io(format!("live watch task: {e}")))??;
        tracing::info!(
            partitions = tpl.count(),
            "live features watch the ingest topics"
        );
        self.watched = Some(tpl);
        Ok(())
    }
}

#[async_trait]
impl LogWatch for KafkaLogWatch {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<RawRecord>, SourceError> {
        if self.watched.is_none() {
            self.assign().await?;
        }
        let mut out = Vec::new();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        let mut messages = self.reader.stream();
        while out.len() < max {
            tokio::select! {
                biased;
                msg = messages.next() => match msg {
                    Some(Ok(msg)) => out.push(record_of(&msg)),
                    Some(Err(e)) if out.is_empty() => return Err(source_error("live watch fetch", e)),
                    Some(Err(_)) | None => break,
                },
                _ = &mut deadline => break,
            }
        }
        Ok(out)
    }

    async fn committed(&mut self) -> Result<Vec<(String, i32, i64)>, SourceError> {
        let Some(watched) = self.watched.clone() else {
            return Ok(Vec::new());
        };
        let group = Arc::clone(&self.group);
        let tpl = tokio::task::spawn_blocking(move || {
            group
                .committed_offsets(watched, REQUEST_TIMEOUT)
                .map_err(|e| source_error("live watch committed offsets", e))
        })
        .await
        .map_err(|e| SourceError::Io(format!("live watch task: {e}")))??;
        Ok(tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}
