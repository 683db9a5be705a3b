//! `PredictChurn`: a user's churn probability from the serving state — the
//! features of the current snapshot fed to the current production model.
//! Pure in-memory work (a hash lookup and a tree walk), cheap enough to run
//! on the request's task.

use serde::Serialize;

use crate::application::serving_state::ServingState;
use crate::domain::model::ModelError;
use crate::domain::time::format_rfc3339;
use crate::telemetry::names;

/// Why a prediction cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("no production model is loaded yet: train one (`churn train` or POST /admin/retrain)")]
    NoProductionModel,
    #[error(
        "no feature snapshot is loaded yet: build one (`churn build-features` or POST /admin/features/rebuild)"
    )]
    NoFeatures,
    #[error("user {0} is unknown: no events at or before the feature snapshot")]
    UnknownUser(u64),
    #[error("the model failed: {0}")]
    Model(#[from] ModelError),
}

/// One prediction in the seed's shape plus `features_as_of`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Prediction {
    pub user_id: u64,
    pub churn_probability: f64,
    pub model_version: String,
    pub timestamp: String,
    pub features_as_of: String,
}

/// The prediction use case.
#[derive(Clone)]
pub struct PredictChurn {
    state: ServingState,
}

impl PredictChurn {
    pub fn new(state: ServingState) -> Self {
        Self { state }
    }

    pub fn state(&self) -> &ServingState {
        &self.state
    }

    /// Predicts for one user.
    ///
    /// # Errors
    /// [`PredictError`]: no model, no features, unknown user, model failure.
    pub fn predict(&self, user_id: u64) -> Result<Prediction, PredictError> {
        let model = self.state.model().ok_or(PredictError::NoProductionModel)?;
        let features = self.state.features().ok_or(PredictError::NoFeatures)?;
        let row = features
            .features(user_id)
            .ok_or(PredictError::UnknownUser(user_id))?;
        let p = model.classifier.predict_proba(&row)?;
        metrics::counter!(names::PREDICTIONS_TOTAL).increment(1);
        Ok(Prediction {
            user_id,
            churn_probability: p[0],
            model_version: model.metadata.version.to_string(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            features_as_of: format_rfc3339(features.as_of()),
        })
    }

    /// Predicts for many users against one consistent model and snapshot.
    /// Per-user failures (unknown users) are returned next to successes.
    ///
    /// # Errors
    /// [`PredictError`] when nothing can be predicted (no model/features).
    pub fn predict_batch(
        &self,
        user_ids: &[u64],
    ) -> Result<Vec<Result<Prediction, PredictError>>, PredictError> {
        let model = self.state.model().ok_or(PredictError::NoProductionModel)?;
        let features = self.state.features().ok_or(PredictError::NoFeatures)?;
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let version = model.metadata.version.to_string();
        let as_of = format_rfc3339(features.as_of());
        let mut known = Vec::new();
        let mut rows = Vec::new();
        for &u in user_ids {
            if let Some(r) = features.features(u) {
                known.push(u);
                rows.extend(r);
            }
        }
        let scores = if known.is_empty() {
            Vec::new()
        } else {
            model.classifier.predict_proba(&rows)?
        };
        metrics::counter!(names::PREDICTIONS_TOTAL).increment(scores.len() as u64);
        let mut scored = known.iter().zip(scores);
        Ok(user_ids
            .iter()
            .map(|&u| {
                if features.contains(u) {
                    let (_, p) = scored.next().ok_or(PredictError::UnknownUser(u))?;
                    Ok(Prediction {
                        user_id: u,
                        churn_probability: p,
                        model_version: version.clone(),
                        timestamp: timestamp.clone(),
                        features_as_of: as_of.clone(),
                    })
                } else {
                    Err(PredictError::UnknownUser(u))
                }
            })
            .collect())
    }
}
