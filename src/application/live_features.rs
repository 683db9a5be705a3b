//! Live features: every user's features as of *now*, equal to a batch
//! build as of now, so an event changes its user's prediction on the next
//! request instead of at the next snapshot rebuild.
//!
//! Design (README "Live features"):
//! - The store stays the one source of events. A user's features are a
//!   [`LiveRow`] evaluated from that user's events (one key-range read:
//!   [`FeatureStore::user_events`]) with the batch evaluator, and cached.
//! - A cached row answers exactly at any time until its `valid_until`
//!   (the first time an event leaves one of its windows); after that, or
//!   when an event of the user is stored (the ingest pipeline calls
//!   [`LiveFeatures::stored`]), the next request reads the user again.
//! - Bounds: at most `max_users` rows (about 0.5 KiB each with the
//!   standard spec; expired rows are dropped first when full), at most
//!   `max_concurrent_reads` reads at once, each at most `max_user_events`
//!   events and `read_timeout`. Past a bound a prediction falls back to
//!   the batch snapshot, counted in `churn_live_fallbacks_total{reason}`;
//!   it never fails because of live features.
//! - A read that raced with a store write of the same user is used for its
//!   request but not cached (each shard numbers its writes and remembers
//!   the last write of each user for as long as a read may take), so the
//!   cache never keeps a row older than a stored event.
//! - Replicas: an event another replica stores never passes through this
//!   one's pipeline. Each replica therefore also reads the whole topic on
//!   its own ([`crate::application::live_watch`]); a record seen there
//!   makes its user *pending* ([`LiveFeatures::pending`]: not cached, read
//!   from the store on every request) until the shared consumer group has
//!   committed past its offset, which it does only after storing it
//!   ([`LiveFeatures::settle`]); then the user is read once more and
//!   cached again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::application::ports::FeatureStore;
use crate::domain::features::{Aggregation, FeatureSpec};
use crate::domain::live_row::LiveRow;
use crate::domain::snapshot::FeatureSnapshot;
use crate::telemetry::metric_names;

/// Shards of the row cache (independent locks and write epochs).
const SHARDS: usize = 64;

/// `[features]` live settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveOptions {
    pub enabled: bool,
    pub max_users: usize,
    pub max_user_events: usize,
    pub max_concurrent_reads: usize,
    pub read_timeout: Duration,
    /// Users compared with the batch snapshot after each rebuild.
    pub check_sample: usize,
    /// Mismatch share of any feature above which the alert gauge is 1.
    pub mismatch_alert: f64,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            max_users: 250_000,
            max_user_events: 100_000,
            max_concurrent_reads: 16,
            read_timeout: Duration::from_millis(500),
            check_sample: 1_000,
            mismatch_alert: 0.001,
        }
    }
}

/// Why a prediction used the snapshot instead of live features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Every read slot was taken.
    Busy,
    /// The store did not answer within `read_timeout`.
    Timeout,
    /// The store failed.
    StoreError,
    /// The user holds more than `max_user_events` events.
    TooManyEvents,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::StoreError => "store_error",
            Self::TooManyEvents => "too_many_events",
        }
    }
}

/// What a live lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The user's features at the time asked, quantized as snapshots are.
    Features(Vec<f64>),
    /// The store holds no event of this user at or before that time.
    Unknown,
    /// Use the snapshot.
    Fallback(Fallback),
}

/// The last online-vs-batch comparison.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ConsistencyReport {
    /// The snapshot compared against (RFC 3339).
    pub snapshot_as_of: String,
    /// Users compared (a deterministic sample of the snapshot).
    pub checked_users: usize,
    /// Users that could not be read (fallbacks), not counted as checked.
    pub skipped_users: usize,
    /// Share of checked users whose live value differed, per feature
    /// (spec order).
    pub mismatch: Vec<FeatureMismatch>,
    /// The largest share above.
    pub worst: f64,
    /// `worst > features.live_mismatch_alert`.
    pub alert: bool,
}

/// One feature's mismatch share.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FeatureMismatch {
    pub feature: String,
    pub ratio: f64,
}

#[derive(Default)]
struct Shard {
    rows: HashMap<u64, Arc<LiveRow>>,
    /// Bumped by every store write touching a user of this shard.
    epoch: u64,
    /// The epoch of each user's last write, and when: kept as long as a
    /// read may take (twice `read_timeout`), so a read that began before a
    /// write of its user is not cached, while reads of other users are.
    written: HashMap<u64, (u64, std::time::Instant)>,
    /// A `clear()` since this epoch invalidates every read begun before.
    cleared_at: u64,
}

/// A shard prunes its write memory when it holds more users than this.
const WRITTEN_PRUNE_AT: usize = 4_096;

/// Cheap-clone handle on the live feature cache.
#[derive(Clone)]
pub struct LiveFeatures {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn FeatureStore>,
    spec: Arc<FeatureSpec>,
    options: LiveOptions,
    shards: Vec<Mutex<Shard>>,
    rows: AtomicUsize,
    reads: tokio::sync::Semaphore,
    report: ArcSwapOption<ConsistencyReport>,
    /// Resolved once: a lookup by name and labels per prediction would be
    /// a visible share of its cost.
    from_cache: metrics::Counter,
    from_store: metrics::Counter,
    pending: Mutex<Pending>,
}

/// Records another replica may not have stored yet, by log partition and
/// offset, and the users they belong to.
#[derive(Default)]
struct Pending {
    by_partition: HashMap<(String, i32), std::collections::BTreeMap<i64, Vec<u64>>>,
    /// Pending records per user.
    users: HashMap<u64, u32>,
    records: usize,
}

/// Most pending records held; past it every cached row is dropped and
/// nothing is cached until the backlog settles (correct, only slower).
const MAX_PENDING_RECORDS: usize = 1_000_000;

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic inside a shard operation leaves a map that is still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn shard_of(user: u64) -> usize {
    // Keys of string ids are hashes already; integer ids are often
    // sequential: mix them so neighbours spread over shards.
    (user.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
}

impl LiveFeatures {
    /// Build it after the metrics recorder is installed (startup does), or
    /// its counters record nowhere.
    pub fn new(store: Arc<dyn FeatureStore>, spec: Arc<FeatureSpec>, options: LiveOptions) -> Self {
        let reads = options.max_concurrent_reads.max(1);
        Self {
            inner: Arc::new(Inner {
                store,
                spec,
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                rows: AtomicUsize::new(0),
                reads: tokio::sync::Semaphore::new(reads),
                report: ArcSwapOption::empty(),
                from_cache: metrics::counter!(metric_names::LIVE_LOOKUPS_TOTAL, "source" => "cached"),
                from_store: metrics::counter!(metric_names::LIVE_LOOKUPS_TOTAL, "source" => "read"),
                pending: Mutex::default(),
                options,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.options.enabled
    }

    pub fn options(&self) -> &LiveOptions {
        &self.inner.options
    }

    /// Live rows held now.
    pub fn len(&self) -> usize {
        self.inner.rows.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events of `users` were stored: their rows are stale. Called by the
    /// ingest pipeline after every successful write.
    pub fn stored(&self, users: impl IntoIterator<Item = u64>) {
        if !self.enabled() {
            return;
        }
        let mut removed = 0;
        let now = std::time::Instant::now();
        let keep = self.inner.options.read_timeout * 2;
        for user in users {
            let mut shard = lock(&self.inner.shards[shard_of(user)]);
            shard.epoch += 1;
            let epoch = shard.epoch;
            if shard.written.len() >= WRITTEN_PRUNE_AT {
                shard
                    .written
                    .retain(|_, (_, at)| now.duration_since(*at) < keep);
            }
            shard.written.insert(user, (epoch, now));
            if shard.rows.remove(&user).is_some() {
                removed += 1;
            }
        }
        if removed > 0 {
            self.inner.rows.fetch_sub(removed, Ordering::Relaxed);
            self.publish_len();
        }
    }

    /// The user's features at `now` from the cache alone: `None` when no
    /// cached row answers at `now` (the caller then uses
    /// [`LiveFeatures::features_at`], which may read the store).
    pub fn cached(&self, user: u64, now: i64) -> Option<Vec<f64>> {
        let row = {
            let shard = lock(&self.inner.shards[shard_of(user)]);
            shard.rows.get(&user).filter(|r| r.answers_at(now)).cloned()
        }?;
        self.inner.from_cache.increment(1);
        Some(self.values(&row, now))
    }

    fn values(&self, row: &LiveRow, now: i64) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.inner.spec.len());
        row.at(&self.inner.spec, now, &mut out);
        out
    }

    /// The user's features at `now`: from the cache when a row answers,
    /// else read from the store (and cached), else a fallback.
    pub async fn features_at(&self, user: u64, now: i64) -> Lookup {
        if let Some(values) = self.cached(user, now) {
            return Lookup::Features(values);
        }
        match self.read(user, now).await {
            Ok(Some(row)) => {
                self.inner.from_store.increment(1);
                Lookup::Features(self.values(&row, now))
            }
            Ok(None) => Lookup::Unknown,
            Err(reason) => {
                metrics::counter!(metric_names::LIVE_FALLBACKS_TOTAL, "reason" => reason.as_str())
                    .increment(1);
                Lookup::Fallback(reason)
            }
        }
    }

    /// Reads the user's events and evaluates them at `now`; caches the row
    /// unless a write of this shard happened meanwhile.
    async fn read(&self, user: u64, now: i64) -> Result<Option<Arc<LiveRow>>, Fallback> {
        let inner = &self.inner;
        let epoch = lock(&inner.shards[shard_of(user)]).epoch;
        let _permit = inner.reads.try_acquire().map_err(|_| Fallback::Busy)?;
        let events = tokio::time::timeout(
            inner.options.read_timeout,
            inner
                .store
                .user_events(&inner.spec, user, inner.options.max_user_events),
        )
        .await
        .map_err(|_| Fallback::Timeout)?
        .map_err(|e| {
            tracing::debug!(error = %e, user, "live features: store read failed");
            Fallback::StoreError
        })?
        .ok_or(Fallback::TooManyEvents)?;
        let Some(row) = LiveRow::evaluate(&inner.spec, &events, now) else {
            return Ok(None);
        };
        let row = Arc::new(row);
        self.insert(user, epoch, &row, now);
        Ok(Some(row))
    }

    fn insert(&self, user: u64, epoch: u64, row: &Arc<LiveRow>, now: i64) {
        let inner = &self.inner;
        {
            let pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.records >= MAX_PENDING_RECORDS || pending.users.contains_key(&user) {
                return;
            }
        }
        let per_shard = (inner.options.max_users / SHARDS).max(1);
        let mut shard = lock(&inner.shards[shard_of(user)]);
        let written_since = shard.written.get(&user).is_some_and(|(e, _)| *e > epoch);
        if written_since || shard.cleared_at > epoch {
            return;
        }
        let mut delta: isize = 0;
        if shard.rows.len() >= per_shard && !shard.rows.contains_key(&user) {
            // Full: drop the rows that no longer answer, else any one.
            let before = shard.rows.len();
            shard.rows.retain(|_, r| r.answers_at(now));
            if shard.rows.len() >= per_shard
                && let Some(k) = shard.rows.keys().next().copied()
            {
                shard.rows.remove(&k);
            }
            delta -= (before - shard.rows.len()) as isize;
        }
        if shard.rows.insert(user, Arc::clone(row)).is_none() {
            delta += 1;
        }
        drop(shard);
        if delta >= 0 {
            inner.rows.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            inner.rows.fetch_sub((-delta) as usize, Ordering::Relaxed);
        }
        self.publish_len();
    }

    fn publish_len(&self) {
        metrics::gauge!(metric_names::LIVE_USERS).set(self.len() as f64);
    }

    /// Records read from the log that the shared group may not have stored
    /// yet: `(user, topic, partition, offset)`. Their users are read from
    /// the store on every request until [`LiveFeatures::settle`] sees the
    /// group's commit pass the offset.
    pub fn pending<'a>(&self, records: impl IntoIterator<Item = (u64, &'a str, i32, i64)>) {
        if !self.enabled() {
            return;
        }
        let mut users = Vec::new();
        let overflow = {
            let mut p = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (user, topic, partition, offset) in records {
                if p.records >= MAX_PENDING_RECORDS {
                    break;
                }
                p.by_partition
                    .entry((topic.to_string(), partition))
                    .or_default()
                    .entry(offset)
                    .or_default()
                    .push(user);
                *p.users.entry(user).or_default() += 1;
                p.records += 1;
                users.push(user);
            }
            p.records >= MAX_PENDING_RECORDS
        };
        if overflow {
            tracing::warn!(
                "live features: {MAX_PENDING_RECORDS} records pending another replica's store; caching stops until they settle"
            );
            self.clear();
        } else {
            self.stored(users);
        }
    }

    /// The shared group has committed `(topic, partition, offset)`: every
    /// pending record below the offset is stored; its users are read anew.
    pub fn settle(&self, committed: &[(String, i32, i64)]) {
        let mut settled = Vec::new();
        {
            let mut guard = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            let p = &mut *guard;
            for (topic, partition, offset) in committed {
                let Some(offsets) = p.by_partition.get_mut(&(topic.clone(), *partition)) else {
                    continue;
                };
                let rest = offsets.split_off(offset);
                let done = std::mem::replace(offsets, rest);
                for user in done.into_values().flatten() {
                    p.records -= 1;
                    if let Some(n) = p.users.get_mut(&user) {
                        *n -= 1;
                        if *n == 0 {
                            p.users.remove(&user);
                            settled.push(user);
                        }
                    }
                }
            }
        }
        // Rows read while the user was pending were never cached; bumping
        // the epoch also drops a read that raced with the settle.
        self.stored(settled);
    }

    /// Users with records pending another replica's store.
    pub fn pending_users(&self) -> usize {
        let p = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.users.len()
    }

    /// Forgets every cached row (a new spec or snapshot does not need it,
    /// but tests and memory pressure may).
    pub fn clear(&self) {
        for shard in &self.inner.shards {
            let mut shard = lock(shard);
            shard.epoch += 1;
            shard.cleared_at = shard.epoch;
            shard.rows.clear();
        }
        self.inner.rows.store(0, Ordering::Relaxed);
        self.publish_len();
    }

    /// The last consistency report, if a check ran.
    pub fn report(&self) -> Option<Arc<ConsistencyReport>> {
        self.inner.report.load_full()
    }

    /// Compares live features with a batch snapshot: a deterministic
    /// sample of its users is read from the store and evaluated as of the
    /// snapshot's time; per feature, the share of users whose value
    /// differs. Equal means the same `f32`, except for amount sums and
    /// means, where float addition order may differ between a store's SQL
    /// and the Rust evaluator (relative 1e-6, as the store parity tests
    /// allow). Publishes the gauges and keeps the report.
    pub async fn check(&self, snapshot: &FeatureSnapshot) -> ConsistencyReport {
        let inner = &self.inner;
        let spec = &inner.spec;
        let names = spec.names();
        let tolerant: Vec<bool> = spec
            .defs()
            .iter()
            .map(|d| {
                matches!(
                    d.aggregation,
                    Aggregation::SumAmount | Aggregation::MeanAmount | Aggregation::Ratio
                )
            })
            .collect();
        let users: Vec<u64> = snapshot.users().map(|(u, _)| u).collect();
        let n = inner.options.check_sample.min(users.len());
        let stride = users.len().checked_div(n).unwrap_or(1);
        let mut differ = vec![0usize; spec.len()];
        let (mut checked, mut skipped) = (0usize, 0usize);
        let mut out = Vec::with_capacity(spec.len());
        for &user in users.iter().step_by(stride.max(1)).take(n) {
            let events = match inner
                .store
                .user_events(spec, user, inner.options.max_user_events)
                .await
            {
                Ok(Some(e)) => e,
                _ => {
                    skipped += 1;
                    continue;
                }
            };
            let (Some(batch), Some(row)) = (
                snapshot.features(user),
                LiveRow::evaluate(spec, &events, snapshot.as_of()),
            ) else {
                // In the snapshot but without events now (or the
                // reverse): every feature differs.
                checked += 1;
                differ.iter_mut().for_each(|d| *d += 1);
                continue;
            };
            row.at(spec, snapshot.as_of(), &mut out);
            checked += 1;
            for (i, (live, batch)) in out.iter().zip(&batch).enumerate() {
                let live = *live;
                let same = live.to_bits() == batch.to_bits()
                    || (tolerant[i] && (live - batch).abs() <= 1e-6 * batch.abs().max(1.0));
                if !same {
                    differ[i] += 1;
                }
            }
        }
        let mismatch: Vec<FeatureMismatch> = names
            .into_iter()
            .zip(&differ)
            .map(|(feature, d)| FeatureMismatch {
                feature,
                ratio: if checked == 0 {
                    0.0
                } else {
                    *d as f64 / checked as f64
                },
            })
            .collect();
        let worst = mismatch.iter().map(|m| m.ratio).fold(0.0, f64::max);
        let report = ConsistencyReport {
            snapshot_as_of: snapshot.as_of_rfc3339().to_string(),
            checked_users: checked,
            skipped_users: skipped,
            alert: worst > inner.options.mismatch_alert,
            worst,
            mismatch,
        };
        for m in &report.mismatch {
            metrics::gauge!(metric_names::LIVE_MISMATCH_RATIO, "feature" => m.feature.clone())
                .set(m.ratio);
        }
        metrics::gauge!(metric_names::LIVE_CONSISTENCY_ALERT)
            .set(f64::from(u8::from(report.alert)));
        metrics::gauge!(metric_names::LIVE_CONSISTENCY_CHECKED_USERS).set(checked as f64);
        if report.alert {
            tracing::warn!(
                worst = report.worst,
                checked,
                "live features differ from the batch snapshot"
            );
        }
        inner.report.store(Some(Arc::new(report.clone())));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::ports::EventStore;
    use crate::domain::event::{Event, TimePolicy};
    use crate::testing::MemoryStore;

    const T: i64 = 1_767_225_600;

    fn event(user: u64, time: i64, kind: &str) -> Event {
        Event::new(user, time, kind, None, None, TimePolicy::at(T, 0)).unwrap()
    }

    #[tokio::test]
    async fn a_stored_event_is_seen_by_the_next_lookup() {
        let store = MemoryStore::new(3);
        store
            .append(vec![event(1, T - 86_400, "login")])
            .await
            .unwrap();
        let spec = Arc::new(FeatureSpec::standard());
        let live = LiveFeatures::new(
            Arc::new(store.clone()),
            spec.clone(),
            LiveOptions::default(),
        );
        let total = spec.index_of("total_events").unwrap();
        let Lookup::Features(before) = live.features_at(1, T).await else {
            panic!("user 1 has events")
        };
        assert_eq!(before[total], 1.0);
        assert_eq!(live.len(), 1);
        assert!(live.cached(1, T + 10).is_some(), "cached and still exact");
        store.append(vec![event(1, T - 60, "login")]).await.unwrap();
        live.stored([1]);
        assert!(live.cached(1, T).is_none(), "a stored event invalidates");
        let Lookup::Features(after) = live.features_at(1, T).await else {
            panic!()
        };
        assert_eq!(after[total], 2.0);
        assert!(matches!(live.features_at(2, T).await, Lookup::Unknown));
    }

    #[tokio::test]
    async fn a_pending_user_is_not_cached_until_the_group_commits_past_it() {
        let store = MemoryStore::new(3);
        store
            .append(vec![event(1, T - 86_400, "login")])
            .await
            .unwrap();
        let spec = Arc::new(FeatureSpec::standard());
        let live = LiveFeatures::new(
            Arc::new(store.clone()),
            spec.clone(),
            LiveOptions::default(),
        );
        assert!(matches!(live.features_at(1, T).await, Lookup::Features(_)));
        assert!(live.cached(1, T).is_some());
        // Another replica's consumer will store this record (offset 7).
        live.pending([(1, "events", 0, 7)]);
        assert_eq!(live.pending_users(), 1);
        assert!(
            live.cached(1, T).is_none(),
            "a pending user's row is dropped"
        );
        assert!(matches!(live.features_at(1, T).await, Lookup::Features(_)));
        assert!(live.cached(1, T).is_none(), "and not cached while pending");
        // The group commits up to 7 (exclusive): still pending.
        live.settle(&[("events".into(), 0, 7)]);
        assert_eq!(live.pending_users(), 1);
        // The event is stored, the group commits past it.
        store.append(vec![event(1, T - 60, "login")]).await.unwrap();
        live.settle(&[("events".into(), 0, 8)]);
        assert_eq!(live.pending_users(), 0);
        let total = spec.index_of("total_events").unwrap();
        let Lookup::Features(v) = live.features_at(1, T).await else {
            panic!()
        };
        assert_eq!(v[total], 2.0);
        assert!(live.cached(1, T).is_some(), "cached again once settled");
    }

    #[tokio::test]
    async fn bounds_fall_back_instead_of_failing() {
        let store = MemoryStore::new(3);
        let events: Vec<Event> = (0..10).map(|i| event(1, T - 1000 + i, "login")).collect();
        store.append(events).await.unwrap();
        let spec = Arc::new(FeatureSpec::standard());
        let options = LiveOptions {
            max_user_events: 5,
            ..LiveOptions::default()
        };
        let live = LiveFeatures::new(Arc::new(store.clone()), spec.clone(), options);
        assert!(matches!(
            live.features_at(1, T).await,
            Lookup::Fallback(Fallback::TooManyEvents)
        ));
        store.outage.set_failing(true);
        let live = LiveFeatures::new(Arc::new(store), spec, LiveOptions::default());
        assert!(matches!(
            live.features_at(1, T).await,
            Lookup::Fallback(Fallback::StoreError)
        ));
    }

    #[tokio::test]
    async fn the_row_cache_stays_within_its_bound() {
        let store = MemoryStore::new(3);
        let events: Vec<Event> = (0..500).map(|u| event(u, T - 100, "login")).collect();
        store.append(events).await.unwrap();
        let options = LiveOptions {
            max_users: 128,
            ..LiveOptions::default()
        };
        let live = LiveFeatures::new(Arc::new(store), Arc::new(FeatureSpec::standard()), options);
        for u in 0..500 {
            assert!(matches!(live.features_at(u, T).await, Lookup::Features(_)));
        }
        assert!(live.len() <= 128, "{} rows held", live.len());
        assert!(live.len() >= 64);
    }

    #[tokio::test]
    async fn the_check_counts_users_whose_live_value_differs() {
        let store = MemoryStore::new(3);
        let events: Vec<Event> = (0..20).map(|u| event(u, T - 100, "login")).collect();
        store.append(events).await.unwrap();
        let spec = Arc::new(FeatureSpec::standard());
        let snapshot = store.compute_snapshot(&spec, T).await.unwrap();
        let live = LiveFeatures::new(
            Arc::new(store.clone()),
            spec.clone(),
            LiveOptions::default(),
        );
        let clean = live.check(&snapshot).await;
        assert_eq!(clean.checked_users, 20);
        assert_eq!(clean.worst, 0.0);
        assert!(!clean.alert);
        // A late event (dated before the snapshot) for 5 of 20 users: the
        // snapshot no longer matches the store for them.
        let late: Vec<Event> = (0..5).map(|u| event(u, T - 50, "login")).collect();
        store.append(late).await.unwrap();
        let report = live.check(&snapshot).await;
        let total = &report.mismatch[spec.index_of("total_events").unwrap()];
        assert_eq!(total.ratio, 0.25);
        assert!(report.alert);
        assert_eq!(live.report().unwrap().worst, report.worst);
    }
}
