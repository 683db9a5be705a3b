//! Deadlines on every store call, for both backends.
//!
//! Why a decorator: a store that accepts connections and never answers (a
//! hung ClickHouse, a stuck disk) otherwise holds each caller forever —
//! `POST /events`, `churn stats`, the consumer's batch — and the requests
//! piling up starve everything else. Every call here ends by its deadline
//! with [`StoreError::Unavailable`] naming the setting, which the HTTP layer
//! answers with 503 and the consumer retries. Dropping the timed-out call
//! cancels its request (ClickHouse) or leaves the blocking write to finish
//! on its thread (SQLite); either way a retry is a redelivery, which the
//! stores merge by event identity.
//!
//! Two budgets: `request` for what a client or the consumer waits on
//! (appends, names, stats, snapshot loads, a live user's events) and `job`
//! for feature builds and training reads, which legitimately take minutes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::application::ports::{
    AppendOutcome, ErasedRows, Erasure, EventStats, EventStore, FeatureStore, LogPosition,
    PredictionSink, RejectTally, ScoredUser, SnapshotSummary, StoreError, TrainingRead, TypeCount,
};
use crate::domain::event::Event;
use crate::domain::features::{FeatureSpec, UserEvent};
use crate::domain::label::LabelPolicy;
use crate::domain::model::Dataset;
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::FeatureSnapshot;

/// How long store calls may take.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Calls a request or the consumer waits on.
    pub request: Duration,
    /// Feature builds, training reads, prediction writes.
    pub job: Duration,
}

/// A store whose every call ends by its deadline.
pub struct DeadlineStore<S: ?Sized> {
    inner: Arc<S>,
    deadlines: Deadlines,
    /// Named in errors: `"clickhouse"` or `"the embedded store"`.
    backend: &'static str,
}

impl<S: ?Sized> DeadlineStore<S> {
    pub fn new(inner: Arc<S>, deadlines: Deadlines, backend: &'static str) -> Self {
        Self {
            inner,
            deadlines,
            backend,
        }
    }

    async fn request<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded(call, self.deadlines.request, "store.request_timeout_secs")
            .await
    }

    async fn job<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded(call, self.deadlines.job, "store.job_timeout_secs")
            .await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
        limit: Duration,
        setting: &str,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => {
                metrics::counter!(
                    crate::telemetry::metric_names::STORE_TIMEOUTS_TOTAL,
                    "backend" => self.backend
                )
                .increment(1);
                Err(StoreError::Unavailable(format!(
                    "{} did not answer within {} ms ({setting})",
                    self.backend,
                    limit.as_millis()
                )))
            }
        }
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for DeadlineStore<S> {
    async fn append(&self, events: Vec<Event>) -> Result<AppendOutcome, StoreError> {
        self.request(self.inner.append(events)).await
    }
    async fn append_from_log(
        &self,
        events: &[Event],
        positions: &[LogPosition],
    ) -> Result<AppendOutcome, StoreError> {
        self.request(self.inner.append_from_log(events, positions))
            .await
    }
    async fn stats(&self) -> Result<EventStats, StoreError> {
        self.request(self.inner.stats()).await
    }
    async fn type_counts(&self) -> Result<Vec<TypeCount>, StoreError> {
        self.request(self.inner.type_counts()).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.request(self.inner.ping()).await
    }
    async fn register_names(&self, names: &[(u64, &str)]) -> Result<Vec<u64>, StoreError> {
        self.request(self.inner.register_names(names)).await
    }
    async fn user_names(&self, keys: &[u64]) -> Result<HashMap<u64, String>, StoreError> {
        self.request(self.inner.user_names(keys)).await
    }
    async fn record_rejects(&self, tallies: &[RejectTally]) -> Result<(), StoreError> {
        self.request(self.inner.record_rejects(tallies)).await
    }
    async fn reject_tallies(&self) -> Result<Vec<RejectTally>, StoreError> {
        self.request(self.inner.reject_tallies()).await
    }
}

#[async_trait]
impl<S: FeatureStore + ?Sized> FeatureStore for DeadlineStore<S> {
    async fn build_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<SnapshotSummary, StoreError> {
        self.job(self.inner.build_snapshot(spec, as_of)).await
    }
    async fn compute_snapshot(
        &self,
        spec: &FeatureSpec,
        as_of: i64,
    ) -> Result<FeatureSnapshot, StoreError> {
        self.job(self.inner.compute_snapshot(spec, as_of)).await
    }
    async fn latest_snapshot(
        &self,
        not_after: Option<i64>,
    ) -> Result<Option<FeatureSnapshot>, StoreError> {
        // A snapshot of millions of users takes a while to stream: a job.
        self.job(self.inner.latest_snapshot(not_after)).await
    }
    async fn snapshots(&self) -> Result<Vec<SnapshotSummary>, StoreError> {
        self.request(self.inner.snapshots()).await
    }
    async fn user_events(
        &self,
        spec: &FeatureSpec,
        user: u64,
        limit: usize,
    ) -> Result<Option<Vec<UserEvent>>, StoreError> {
        self.request(self.inner.user_events(spec, user, limit))
            .await
    }
    async fn training_set(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cutoff: i64,
        sample: RowSample,
    ) -> Result<Dataset, StoreError> {
        self.job(self.inner.training_set(spec, policy, cutoff, sample))
            .await
    }
    async fn training_sets(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cuts: &[(i64, RowSample)],
        snapshot_at: Option<i64>,
    ) -> Result<TrainingRead, StoreError> {
        self.job(self.inner.training_sets(spec, policy, cuts, snapshot_at))
            .await
    }
}

#[async_trait]
impl<S: PredictionSink + ?Sized> PredictionSink for DeadlineStore<S> {
    async fn write(&self, scored_at: i64, rows: &[ScoredUser]) -> Result<u64, StoreError> {
        self.job(self.inner.write(scored_at, rows)).await
    }
}

#[async_trait]
impl<S: Erasure + ?Sized> Erasure for DeadlineStore<S> {
    async fn forget_users(&self, users: &[u64]) -> Result<ErasedRows, StoreError> {
        self.job(self.inner.forget_users(users)).await
    }
    async fn drop_events_before(&self, before: i64) -> Result<u64, StoreError> {
        self.job(self.inner.drop_events_before(before)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that never answers.
    struct Hung;

    #[async_trait]
    impl PredictionSink for Hung {
        async fn write(&self, _: i64, _: &[ScoredUser]) -> Result<u64, StoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_ends_by_its_deadline_naming_the_setting() {
        let store = DeadlineStore::new(
            Arc::new(Hung),
            Deadlines {
                request: Duration::from_secs(1),
                job: Duration::from_secs(5),
            },
            "clickhouse",
        );
        let started = tokio::time::Instant::now();
        let err = store.write(0, &[]).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let StoreError::Unavailable(message) = err else {
            panic!("expected Unavailable, got {err:?}");
        };
        assert!(message.contains("store.job_timeout_secs"), "{message}");
        assert!(message.contains("clickhouse"), "{message}");
    }
}
