//! Noticing a consumer that owns no partition while records wait.
//!
//! After a `kill -9`, noida-db kept the dead member's partitions with
//! dynamic membership: the restarted consumer joined, was assigned nothing,
//! and 60,000 of 100,000 records stayed unread while `/readyz` said
//! "ready". Owning nothing is normal (more replicas than partitions); owning
//! nothing while the group's committed offsets stay behind the log and do
//! not move is not: nobody consumes those records. The watch compares
//! successive readings of the group's backlog and reports how long it has
//! been stuck.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// The group's position against the log on the watched topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// Records after the group's committed offsets (or the log start).
    pub unread: u64,
    /// The committed offsets, partition by partition (-1: none).
    pub committed: Vec<i64>,
}

/// Reads the backlog of `topics` for the consumer's group (blocking: call
/// off the runtime). Topic patterns (`^…`) are skipped.
///
/// # Errors
/// The broker did not answer within `timeout`.
pub fn backlog<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topics: &[String],
    timeout: Duration,
) -> KafkaResult<Backlog> {
    let mut tpl = TopicPartitionList::new();
    let mut bounds = Vec::new();
    for topic in topics.iter().filter(|t| !t.starts_with('^')) {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                tpl.add_partition(topic, p.id());
                bounds.push((low, high));
            }
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut out = Backlog {
        unread: 0,
        committed: Vec::with_capacity(bounds.len()),
    };
    for (element, (low, high)) in committed.elements().iter().zip(bounds) {
        let at = match element.offset() {
            Offset::Offset(n) => n,
            _ => -1,
        };
        out.committed.push(at);
        let from = if at < 0 { low } else { at.max(low) };
        out.unread += u64::try_from(high - from).unwrap_or(0);
    }
    Ok(out)
}

/// Successive observations of one consumer.
#[derive(Debug, Default)]
pub struct OrphanWatch {
    since: Option<Instant>,
    last: Option<Backlog>,
}

impl OrphanWatch {
    /// The consumer owns partitions: nothing to watch.
    pub fn owning(&mut self) {
        self.since = None;
        self.last = None;
    }

    /// The consumer owns nothing and the group's backlog reads `now`.
    pub fn observe(&mut self, now: Backlog, at: Instant) {
        let stuck = now.unread > 0
            && self
                .last
                .as_ref()
                .is_some_and(|before| before.committed == now.committed);
        if stuck {
            self.since.get_or_insert(at);
        } else if now.unread == 0
            || self
                .last
                .as_ref()
                .is_some_and(|b| b.committed != now.committed)
        {
            // Read to the end, or someone else is consuming: fine.
            self.since = None;
        }
        self.last = Some(now);
    }

    /// How long records have waited with nobody consuming them, and how
    /// many, while this consumer owns nothing.
    pub fn stuck(&self, at: Instant) -> Option<(Duration, u64)> {
        let since = self.since?;
        Some((at.duration_since(since), self.last.as_ref()?.unread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(unread: u64, committed: &[i64]) -> Backlog {
        Backlog {
            unread,
            committed: committed.to_vec(),
        }
    }

    #[test]
    fn stuck_only_while_a_backlog_stays_unmoved() {
        let t0 = Instant::now();
        let s = Duration::from_secs(5);
        let mut w = OrphanWatch::default();
        w.observe(reading(100, &[10, -1]), t0);
        assert_eq!(w.stuck(t0), None, "one reading says nothing");
        w.observe(reading(100, &[10, -1]), t0 + s);
        assert_eq!(w.stuck(t0 + 2 * s), Some((s, 100)));
        // Another member consumes: the committed offsets move.
        w.observe(reading(60, &[50, -1]), t0 + 2 * s);
        assert_eq!(w.stuck(t0 + 2 * s), None);
        // Read to the end: nothing waits.
        w.observe(reading(0, &[50, 40]), t0 + 3 * s);
        w.observe(reading(0, &[50, 40]), t0 + 4 * s);
        assert_eq!(w.stuck(t0 + 4 * s), None);
        // Stuck again, then this consumer gets partitions.
        w.observe(reading(7, &[50, 40]), t0 + 5 * s);
        w.observe(reading(7, &[50, 40]), t0 + 6 * s);
        assert!(w.stuck(t0 + 6 * s).is_some());
        w.owning();
        assert_eq!(w.stuck(t0 + 7 * s), None);
    }
}
