//! `BuildFeatures`: the `build_user_features` step. Computes every user's
//! features as of a time (default: now) with the shared spec and persists a
//! dated snapshot that serving loads.

use std::sync::Arc;
use std::time::Instant;

use crate::application::ports::{FeatureStore, SnapshotSummary, StoreError};
use crate::domain::features::FeatureSpec;
use crate::telemetry::names;

/// The feature-build use case.
#[derive(Clone)]
pub struct BuildFeatures {
    store: Arc<dyn FeatureStore>,
    spec: Arc<FeatureSpec>,
}

impl BuildFeatures {
    pub fn new(store: Arc<dyn FeatureStore>, spec: Arc<FeatureSpec>) -> Self {
        Self { store, spec }
    }

    /// Builds and stores the snapshot as of `as_of` (seconds; `None` = now).
    ///
    /// # Errors
    /// [`StoreError`] from the backend; no partial snapshot becomes visible.
    pub async fn run(&self, as_of: Option<i64>) -> Result<SnapshotSummary, StoreError> {
        let as_of = as_of.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let started = Instant::now();
        let result = self.store.build_snapshot(&self.spec, as_of).await;
        let secs = started.elapsed().as_secs_f64();
        match &result {
            Ok(summary) => {
                metrics::histogram!(names::FEATURE_BUILD_DURATION_SECONDS).record(secs);
                metrics::gauge!(names::FEATURE_BUILD_LAST_SUCCESS_TIMESTAMP_SECONDS)
                    .set(chrono::Utc::now().timestamp() as f64);
                tracing::info!(
                    as_of = %crate::domain::time::format_rfc3339(as_of),
                    users = summary.users,
                    secs,
                    "feature snapshot built"
                );
            }
            Err(e) => {
                metrics::counter!(names::JOB_FAILURES_TOTAL, "job" => "build_features")
                    .increment(1);
                tracing::error!(error = %e, "feature build failed");
            }
        }
        result
    }
}
