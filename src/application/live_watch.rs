//! The live-features log watch of one replica: reads every record of the
//! ingest topics (outside the consumer group that stores them), marks each
//! record's user pending, and settles users once the group's committed
//! offsets pass their records — so a replica answers exactly for users
//! whose events another replica stored (README "Live features",
//! "Replicas").

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::application::ingest::{Delivery, IngestEvents, SourceKind};
use crate::application::live_features::LiveFeatures;
use crate::application::ports::LogWatch;

/// Records taken per read.
const WATCH_BATCH: usize = 10_000;

/// Watches until `stop`; `settle_every` is how often the group's commits
/// are read (the extra delay before another replica's events are cached).
///
/// # Errors
/// The watch failed (the supervisor restarts the task with a new client).
pub async fn watch_log(
    mut watch: Box<dyn LogWatch>,
    ingest: IngestEvents,
    live: LiveFeatures,
    settle_every: Duration,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut settled_at = Instant::now();
    loop {
        let records = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = watch.next_batch(WATCH_BATCH, settle_every) => r.map_err(|e| e.to_string())?,
        };
        if !records.is_empty() {
            // Parsed as the storing consumer parses them (same mapping), so
            // the user keys agree; rejects are that consumer's business.
            let batch = ingest.prepare(records, &mut Delivery::new(SourceKind::Kafka));
            live.pending(
                batch
                    .events
                    .iter()
                    .zip(&batch.positions)
                    .map(|(e, p)| (e.user_id(), p.topic.as_str(), p.partition, p.offset)),
            );
        }
        if settled_at.elapsed() >= settle_every {
            let committed = watch.committed().await.map_err(|e| e.to_string())?;
            live.settle(&committed);
            settled_at = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::application::ports::{EventStore, LogPosition, RawRecord, SourceError};
    use crate::domain::event::{Event, TimePolicy};
    use crate::domain::features::FeatureSpec;
    use crate::testing::MemoryStore;

    /// One record of user 5 at offset 0; the group commits past it once
    /// `stored` is set.
    struct OneRecord {
        sent: bool,
        stored: Arc<std::sync::atomic::AtomicBool>,
    }

    #[async_trait]
    impl LogWatch for OneRecord {
        async fn next_batch(
            &mut self,
            _max: usize,
            wait: Duration,
        ) -> Result<Vec<RawRecord>, SourceError> {
            if self.sent {
                tokio::time::sleep(wait).await;
                return Ok(Vec::new());
            }
            self.sent = true;
            let mut r = RawRecord::new(
                br#"{"user_id":5,"event_time":"2026-01-01T00:00:00Z","event_type":"login"}"#
                    .to_vec(),
                "t/0@0",
            );
            r.position = Some(LogPosition {
                topic: "t".into(),
                partition: 0,
                offset: 0,
            });
            Ok(vec![r])
        }

        async fn committed(&mut self) -> Result<Vec<(String, i32, i64)>, SourceError> {
            let through = i64::from(self.stored.load(std::sync::atomic::Ordering::SeqCst));
            Ok(vec![("t".into(), 0, through)])
        }
    }

    #[tokio::test]
    async fn a_watched_record_keeps_its_user_pending_until_committed() {
        let store = MemoryStore::new(3);
        let t = 1_767_225_600;
        let e = Event::new(5, t - 3_600, "login", None, None, TimePolicy::at(t, 0)).unwrap();
        store.append(vec![e]).await.unwrap();
        let live = LiveFeatures::new(
            Arc::new(store.clone()),
            Arc::new(FeatureSpec::standard()),
            Default::default(),
        );
        let ingest = IngestEvents::new(Arc::new(store), 86_400 * 3_650, 100);
        let stored = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_log(
            Box::new(OneRecord {
                sent: false,
                stored: stored.clone(),
            }),
            ingest,
            live.clone(),
            Duration::from_millis(10),
            stop.clone(),
        ));
        let wait_for = |n: usize| {
            let live = live.clone();
            async move {
                for _ in 0..500 {
                    if live.pending_users() == n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("pending users never reached {n}");
            }
        };
        wait_for(1).await;
        stored.store(true, std::sync::atomic::Ordering::SeqCst);
        wait_for(0).await;
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
