//! `BuildFeatures`: the `build_user_features` step. Computes every user's
//! features as of a time with the shared spec and persists a dated snapshot
//! that serving loads.
//!
//! The time is the caller's: now (serving a live stream), the end of the
//! data (a historic log: "now" would make every user look inactive for as
//! long as the log is old), or any instant. A time far past the newest
//! event is built as asked, with a warning saying what to use instead.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::application::ports::{EventStore, FeatureStore, SnapshotSummary, StoreError};
use crate::domain::features::FeatureSpec;
use crate::domain::time::{DAY_SECS, format_rfc3339};
use crate::telemetry::metric_names;

/// When a snapshot is computed as of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The wall clock.
    Now,
    /// The newest stored event.
    EndOfData,
    /// The newest stored event when it is more than [`STALE_DAYS`] old (a
    /// historic log: "now" would make every user look gone), else now.
    Auto,
    At(i64),
}

impl AsOf {
    /// The instant this rule means, given the clock and the newest event.
    pub fn at(self, now: i64, last_event: Option<i64>) -> Option<i64> {
        match self {
            Self::Now => Some(now),
            Self::At(t) => Some(t),
            Self::EndOfData => last_event,
            Self::Auto => Some(match last_event {
                Some(last) if now - last > STALE_DAYS * DAY_SECS => last,
                _ => now,
            }),
        }
    }
}

/// Beyond this many days between the as-of time and the newest event, a
/// build warns.
pub const STALE_DAYS: i64 = 7;

/// What a build stored, and what the caller should know about it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    #[serde(flatten)]
    pub summary: SnapshotSummary,
    pub warnings: Vec<String>,
}

/// The feature-build use case.
#[derive(Clone)]
pub struct BuildFeatures {
    store: Arc<dyn FeatureStore>,
    events: Arc<dyn EventStore>,
    spec: Arc<FeatureSpec>,
}

impl BuildFeatures {
    pub fn new(
        store: Arc<dyn FeatureStore>,
        events: Arc<dyn EventStore>,
        spec: Arc<FeatureSpec>,
    ) -> Self {
        Self {
            store,
            events,
            spec,
        }
    }

    /// Resolves `as_of` against the store and the clock; warns when it lies
    /// far past the newest event.
    ///
    /// # Errors
    /// [`StoreError`] reading the store's time range; an empty store with
    /// [`AsOf::EndOfData`].
    pub async fn resolve(&self, as_of: AsOf) -> Result<(i64, Vec<String>), StoreError> {
        let last = self.events.stats().await?.last_event_time;
        let t = as_of
            .at(chrono::Utc::now().timestamp(), last)
            .ok_or_else(|| {
                StoreError::Insufficient("the event store is empty: no end of data yet".into())
            })?;
        let mut warnings = Vec::new();
        if let Some(last) = last
            && t - last > STALE_DAYS * DAY_SECS
        {
            warnings.push(format!(
                "features as of {} are {} days after the newest event ({}): every user looks at \
                 least that inactive; for a historic log build as of the end of the data \
                 (`--as-of end`)",
                format_rfc3339(t),
                (t - last) / DAY_SECS,
                format_rfc3339(last)
            ));
        }
        Ok((t, warnings))
    }

    /// The newest snapshot time serving may use under `rule`: snapshots
    /// built later than the rule's instant (say "as of now" on a historic
    /// log, under the end-of-data rule) are passed over, so serving,
    /// scoring and the drift reference all follow the one rule. `None` =
    /// no limit.
    ///
    /// # Errors
    /// [`StoreError`] reading the store's time range.
    pub async fn serving_limit(&self, rule: AsOf) -> Result<Option<i64>, StoreError> {
        if rule == AsOf::Now {
            return Ok(None);
        }
        let last = self.events.stats().await?.last_event_time;
        Ok(rule.at(chrono::Utc::now().timestamp(), last))
    }

    /// Builds and stores the snapshot as of `as_of`.
    ///
    /// # Errors
    /// [`StoreError`] from the backend; no partial snapshot becomes visible.
    pub async fn run(&self, as_of: AsOf) -> Result<BuildReport, StoreError> {
        let started = Instant::now();
        let result = match self.resolve(as_of).await {
            Ok((t, warnings)) => self
                .store
                .build_snapshot(&self.spec, t)
                .await
                .map(|summary| BuildReport { summary, warnings }),
            Err(e) => Err(e),
        };
        let secs = started.elapsed().as_secs_f64();
        match &result {
            Ok(report) => {
                metrics::histogram!(metric_names::FEATURE_BUILD_DURATION_SECONDS).record(secs);
                metrics::gauge!(metric_names::FEATURE_BUILD_LAST_SUCCESS_TIMESTAMP_SECONDS)
                    .set(chrono::Utc::now().timestamp() as f64);
                for w in &report.warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!(
                    as_of = %format_rfc3339(report.summary.as_of),
                    users = report.summary.users,
                    secs,
                    "feature snapshot built"
                );
            }
            Err(e) => {
                metrics::counter!(metric_names::JOB_FAILURES_TOTAL, "job" => "build_features")
                    .increment(1);
                tracing::error!(error = %e, "feature build failed");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Event, TimePolicy};
    use crate::testing::MemoryStore;

    #[tokio::test]
    async fn historic_data_builds_at_its_end_and_a_late_as_of_warns() {
        let store = MemoryStore::new(3);
        let t = 800_000_000; // 1995
        let e = Event::new(1, t, "purchase", None, Some(3.0), TimePolicy::at(t, 0)).unwrap();
        store.append(vec![e]).await.unwrap();
        let build = BuildFeatures::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(FeatureSpec::standard()),
        );
        let end = build.run(AsOf::EndOfData).await.unwrap();
        assert_eq!(end.summary.as_of, t);
        assert!(end.warnings.is_empty());
        let now = build.run(AsOf::Now).await.unwrap();
        assert_eq!(now.warnings.len(), 1);
        assert!(
            now.warnings[0].contains("--as-of end"),
            "{:?}",
            now.warnings
        );
        let empty = BuildFeatures::new(
            Arc::new(MemoryStore::new(1)),
            Arc::new(MemoryStore::new(1)),
            Arc::new(FeatureSpec::standard()),
        );
        assert!(matches!(
            empty.run(AsOf::EndOfData).await,
            Err(StoreError::Insufficient(_))
        ));
    }
}
