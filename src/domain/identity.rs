//! Which stored identity an event gets, so that an event is merged with
//! another only when it is provably a redelivery.
//!
//! Stores keep one event per (user, time, identity). The identity is:
//! 1. **the producer's event id** when the event carries one (`event_id`,
//!    or what `ingest.fields.event_id` maps, e.g. Segment's `messageId`):
//!    the same id for the same user is one event wherever it comes from;
//! 2. otherwise, for a record read from a partitioned log (a Kafka
//!    message), its **content and log position** (topic, partition,
//!    offset): re-reading the same offsets stores nothing new, while two
//!    identical messages at two offsets are two events;
//! 3. otherwise — a file, stdin, an HTTP body, a generator run: a
//!    *delivery* — its **content and the ordinal of that content within the
//!    delivery**: the first line with a given content is ordinal 0, an
//!    identical second line ordinal 1, and so on. Three identical lines of
//!    one file are three events; ingesting the same file (or posting the
//!    same body) again gives the same three identities and stores nothing.
//!    Ordinal 0's identity is the bare content id, so overlapping exports
//!    (yesterday's file again inside today's) are recognised too, and a
//!    store filled by earlier versions (whose identity was the content id)
//!    recognises what it already holds.
//!
//! Ordinals are counted over segments of [`SEGMENT_RECORDS`] records, the
//! segment number entering the identity from the second on: memory stays
//! bounded on an endless stdin, and a redelivery, which segments the same
//! records the same way, still matches exactly.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::event::Event;
use super::math::splitmix64;

/// Records per ordinal segment of one delivery (about 38 MB of seen content
/// ids at most).
pub const SEGMENT_RECORDS: u64 = 1 << 21;

/// Content ids are uniformly distributed already: hashing them again only
/// costs time.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdBuild = BuildHasherDefault<IdHasher>;

/// Ordinal identities within one delivery (rule 3 of the module doc).
#[derive(Default)]
pub struct DeliveryIds {
    /// Content ids seen once in the current segment.
    seen: HashSet<u64, IdBuild>,
    /// How many times each content seen more than once was seen.
    repeats: HashMap<u64, u32, IdBuild>,
    segment: u64,
}

impl DeliveryIds {
    pub fn new() -> Self {
        Self::default()
    }

    /// Assigns the identity of a valid event read as record `index` of the
    /// delivery (0-based, counting every record, valid or not, so that the
    /// segments do not depend on which records a run refused). Events with
    /// a producer id keep it. Records must come in delivery order.
    pub fn assign(&mut self, event: &mut Event, index: u64) {
        if event.has_supplied_id() {
            return;
        }
        let segment = index / SEGMENT_RECORDS;
        if segment != self.segment {
            self.seen.clear();
            self.repeats.clear();
            self.segment = segment;
        }
        // Until assigned, an event's identity is its content id (computed
        // once, in `Event::new`).
        let content = event.event_id();
        let ordinal = if self.seen.insert(content as u64) {
            0
        } else {
            let n = self.repeats.entry(content as u64).or_insert(0);
            *n += 1;
            *n
        };
        event.assign_id(ordinal_id(content, segment, ordinal));
    }
}

/// The identity of the `ordinal`-th occurrence of a content in `segment`.
pub fn ordinal_id(content: i64, segment: u64, ordinal: u32) -> i64 {
    if segment == 0 && ordinal == 0 {
        return content;
    }
    mix(content, &[1, segment, u64::from(ordinal)])
}

/// The identity of an event read at a log position (rule 2); a producer id
/// wins over it.
pub fn assign_logged(event: &mut Event, topic: &str, partition: i32, offset: i64) {
    if event.has_supplied_id() {
        return;
    }
    let id = mix(
        event.event_id(),
        &[2, topic_hash(topic), partition as u64, offset as u64],
    );
    event.assign_id(id);
}

/// FNV-1a of the topic name: stable across processes and versions.
fn topic_hash(topic: &str) -> u64 {
    topic.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Folds `parts` into a content id with splitmix64 steps. The content id is
/// already a SHA-256 prefix, and identities only ever meet inside one user
/// and second (the stores' keys lead with both): a cheap, stable mix is
/// enough, and costs nanoseconds per streamed event instead of a digest.
fn mix(content: i64, parts: &[u64]) -> i64 {
    let mut h = content as u64;
    for p in parts {
        h = splitmix64(h ^ splitmix64(*p));
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::TimePolicy;

    fn event(amount: f64) -> Event {
        Event::new(
            7u64,
            1_700_000_000,
            "purchase",
            None,
            Some(amount),
            TimePolicy::at(1_800_000_000, 0),
        )
        .unwrap()
    }

    fn ids(events: &[Event], offset: u64) -> Vec<i64> {
        let mut d = DeliveryIds::new();
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut e = e.clone();
                d.assign(&mut e, offset + i as u64);
                e.event_id()
            })
            .collect()
    }

    #[test]
    fn identical_lines_of_one_delivery_are_distinct_and_redelivery_matches() {
        let lines = [event(5.0), event(5.0), event(5.0), event(6.0)];
        let first = ids(&lines, 0);
        let set: HashSet<i64> = first.iter().copied().collect();
        assert_eq!(set.len(), 4, "{first:?}");
        assert_eq!(ids(&lines, 0), first, "the same delivery again");
        // Ordinal 0 is the content id: an overlapping export matches.
        assert_eq!(first[0], lines[0].content_id());
        assert_eq!(first[3], lines[3].content_id());
        // Another segment: other identities, still distinct.
        let later = ids(&lines, SEGMENT_RECORDS);
        assert!(later.iter().all(|id| !set.contains(id)), "{later:?}");
        assert_eq!(later.iter().collect::<HashSet<_>>().len(), 4);
    }

    #[test]
    fn log_positions_and_producer_ids_decide_identity() {
        let (mut a, mut b) = (event(5.0), event(5.0));
        assign_logged(&mut a, "events", 0, 10);
        assign_logged(&mut b, "events", 0, 11);
        assert_ne!(a.event_id(), b.event_id(), "two messages, two events");
        let mut again = event(5.0);
        assign_logged(&mut again, "events", 0, 10);
        assert_eq!(a.event_id(), again.event_id(), "a redelivered offset");
        let mut other_topic = event(5.0);
        assign_logged(&mut other_topic, "events2", 0, 10);
        assert_ne!(a.event_id(), other_topic.event_id());
        // A producer id wins over position and ordinal.
        let p = event(5.0).with_supplied_id("m-1").unwrap();
        let mut q = p.clone();
        assign_logged(&mut q, "events", 3, 99);
        let mut d = DeliveryIds::new();
        let mut r = p.clone();
        d.assign(&mut r, 0);
        d.assign(&mut r, 1);
        assert_eq!((q.event_id(), r.event_id()), (p.event_id(), p.event_id()));
    }
}
