//! Step 6: the drift reference stored with the version: the chosen model's
//! scores and the feature distributions of every user as serving's rebuilds
//! compute them.

use std::time::Instant;

use super::TrainModel;
use super::choose::Chosen;
use crate::domain::drift::{DRIFT_SAMPLE_ROWS, DriftReference};
use crate::domain::model::ModelError;
use crate::domain::snapshot::FeatureSnapshot;

impl TrainModel {
    /// The chosen model's raw scores on `snapshot` (every user's features
    /// as of the time serving's rebuilds use: now, or the newest event, as
    /// serving computes them): what drift is measured against. `None`
    /// (logged) when it cannot be built: monitoring is then unavailable,
    /// training is not failed.
    pub(super) async fn drift_reference(
        &self,
        chosen: &Chosen,
        snapshot: Result<FeatureSnapshot, String>,
    ) -> Option<DriftReference> {
        let started = Instant::now();
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "drift reference not built");
                return None;
            }
        };
        let classifier = chosen.classifier.clone();
        let n = self.spec.len();
        let joined = tokio::task::spawn_blocking(move || -> Result<DriftReference, ModelError> {
            let (_, rows) = snapshot.sample_rows(DRIFT_SAMPLE_ROWS);
            let users = snapshot.users_by_row();
            let mut scores = Vec::with_capacity(rows.len() / n.max(1));
            for chunk in rows.chunks(8_192 * n.max(1)) {
                scores.extend(classifier.predict_proba(chunk)?);
            }
            Ok(DriftReference::build(
                snapshot.as_of_rfc3339().to_string(),
                &users,
                &rows,
                n,
                &scores,
            ))
        })
        .await;
        match joined {
            Ok(Ok(r)) => {
                tracing::info!(
                    users = r.users,
                    secs = started.elapsed().as_secs_f64(),
                    "drift reference built"
                );
                Some(r)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "drift reference not built");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "drift reference task failed");
                None
            }
        }
    }
}
