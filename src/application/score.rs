//! `ScoreUsers`: batch scores for every eligible user of the newest
//! snapshot (`churn score`), for a retention team's call list or a BI join.
//!
//! Eligible means what it means in training: at least `min_events`
//! activity events in the lookback before the snapshot time (and, with
//! churn events, not cancelled since). The model was trained and validated
//! on exactly those users; scores of the others (long gone, or too new)
//! would be extrapolations, so they are left out unless asked for.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::application::build_features::AsOf;
use crate::application::manage_models::{LoadedModel, ManageModels, ModelsError};
use crate::application::ports::{EventStore, FeatureStore, PredictionSink, ScoredUser, StoreError};
use crate::application::user_ids::user_ids;
use crate::domain::explanation::explain;
use crate::domain::features::{Aggregation, FeatureDef, FeatureSpec};
use crate::domain::label::LabelPolicy;
use crate::domain::model::ModelError;
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::FeatureSnapshot;

/// Users scored per model call and per write.
const CHUNK_USERS: usize = 8_192;

/// Why scoring stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("no production model: train one first (`churn train`)")]
    NoModel,
    #[error("no feature snapshot: build one first (`churn build-features`)")]
    NoFeatures,
    /// The snapshot has users, none of them eligible: scoring would write
    /// nothing while looking like success.
    #[error("{0}")]
    NobodyEligible(String),
    #[error("{0}")]
    Schema(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Models(#[from] ModelsError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("writing scores: {0}")]
    Output(String),
    #[error("scoring task failed: {0}")]
    Join(String),
}

/// What to score.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreOptions {
    /// Top contributions per user (`None`: none).
    pub reasons: Option<usize>,
    /// A registered version instead of `production`.
    pub version: Option<u64>,
    /// Every user of the snapshot, eligible or not.
    pub all_users: bool,
}

/// What a scoring run wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreSummary {
    pub model_version: u64,
    pub features_as_of: String,
    pub snapshot_users: usize,
    pub eligible_users: usize,
    /// Users of the snapshot not scored (without `--all-users`), and why.
    pub left_out: usize,
    pub left_out_reason: String,
    pub written: usize,
    /// Rows also written to the prediction table (ClickHouse), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_rows: Option<u64>,
    pub calibrated: bool,
    pub secs: f64,
}

/// The batch-scoring use case.
#[derive(Clone)]
pub struct ScoreUsers {
    features: Arc<dyn FeatureStore>,
    /// Names of string-keyed users, for the output.
    events: Arc<dyn EventStore>,
    models: ManageModels,
    spec: Arc<FeatureSpec>,
    policy: LabelPolicy,
    sink: Option<Arc<dyn PredictionSink>>,
    /// Which snapshot is scored: the newest under the rebuild rule.
    rule: AsOf,
}

/// The users eligible at `cutoff` under `policy`, ascending: the training
/// set's population, computed with a one-feature spec (cheap).
///
/// # Errors
/// [`StoreError`] from the store.
pub async fn eligible_users(
    store: &dyn FeatureStore,
    policy: &LabelPolicy,
    cutoff: i64,
) -> Result<Vec<u64>, StoreError> {
    let probe = FeatureSpec::new(
        vec![FeatureDef::aggregate(
            "gap",
            Aggregation::GapMean,
            &[],
            None,
        )],
        "eligibility",
    )
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(store
        .training_set(&probe, policy, cutoff, RowSample::ALL)
        .await?
        .user_ids)
}

impl ScoreUsers {
    pub fn new(
        features: Arc<dyn FeatureStore>,
        events: Arc<dyn EventStore>,
        models: ManageModels,
        spec: Arc<FeatureSpec>,
        policy: LabelPolicy,
        sink: Option<Arc<dyn PredictionSink>>,
    ) -> Self {
        Self {
            features,
            events,
            models,
            spec,
            policy,
            sink,
            rule: AsOf::Now,
        }
    }

    /// Scores the newest snapshot under `rule` (`schedule.features_as_of`).
    pub fn with_rule(mut self, rule: AsOf) -> Self {
        self.rule = rule;
        self
    }

    /// Scores the users and hands them to `emit` in chunks (ascending user
    /// id), then to the prediction table when one is configured.
    ///
    /// # Errors
    /// [`ScoreError`]; rows already emitted stay emitted.
    pub async fn run(
        &self,
        options: ScoreOptions,
        mut emit: impl FnMut(&[ScoredUser]) -> Result<(), String>,
    ) -> Result<ScoreSummary, ScoreError> {
        let started = Instant::now();
        let model = match options.version {
            Some(v) => self.models.load(v).await?,
            None => self
                .models
                .load_production()
                .await?
                .ok_or(ScoreError::NoModel)?,
        };
        if model.metadata.feature_fingerprint != self.spec.fingerprint() {
            return Err(ScoreError::Schema(format!(
                "version {} was trained on features {}, the configured spec is {}",
                model.metadata.version,
                model.metadata.feature_fingerprint,
                self.spec.fingerprint()
            )));
        }
        let limit = match self.rule {
            AsOf::Now => None,
            rule => rule.at(
                chrono::Utc::now().timestamp(),
                self.events.stats().await?.last_event_time,
            ),
        };
        let snapshot = self
            .features
            .latest_snapshot(limit)
            .await?
            .ok_or(ScoreError::NoFeatures)?;
        let users: Vec<u64> = if options.all_users {
            let mut all: Vec<u64> = snapshot.users().map(|(u, _)| u).collect();
            all.sort_unstable();
            all
        } else {
            eligible_users(&*self.features, &self.policy, snapshot.as_of())
                .await?
                .into_iter()
                .filter(|u| snapshot.contains(*u))
                .collect()
        };
        let left_out = snapshot.len() - users.len();
        let left_out_reason = if options.all_users {
            String::new()
        } else {
            format!(
                "not eligible at {}: fewer than {} activity events in the {} days before it \
                 (the population the model was trained on; --all-users scores them too)",
                snapshot.as_of_rfc3339(),
                self.policy.min_events,
                self.policy.lookback_days
            )
        };
        if users.is_empty() && !snapshot.is_empty() {
            let last = self.events.stats().await?.last_event_time;
            return Err(ScoreError::NobodyEligible(format!(
                "none of the {} users of the snapshot as of {} is eligible (no activity in the {} \
                 days before it){}: build features as of the end of the data (`churn \
                 build-features --as-of end`, schedule.features_as_of = \"end\" or \"auto\"), \
                 widen training.lookback_days, or score --all-users",
                snapshot.len(),
                snapshot.as_of_rfc3339(),
                self.policy.lookback_days,
                last.map(|t| format!(
                    "; the newest event is {}",
                    crate::domain::time::format_rfc3339(t)
                ))
                .unwrap_or_default()
            )));
        }
        let (model, snapshot) = (Arc::new(model), Arc::new(snapshot));
        let scored_at = chrono::Utc::now().timestamp();
        let mut written = 0usize;
        let mut table_rows = self.sink.as_ref().map(|_| 0u64);
        for chunk in users.chunks(CHUNK_USERS) {
            let (m, s, ids) = (model.clone(), snapshot.clone(), chunk.to_vec());
            let reasons = options.reasons;
            let mut rows = tokio::task::spawn_blocking(move || score_chunk(&m, &s, &ids, reasons))
                .await
                .map_err(|e| ScoreError::Join(e.to_string()))??;
            let ids = user_ids(&*self.events, chunk).await?;
            for (row, id) in rows.iter_mut().zip(ids) {
                row.user_id = id;
            }
            emit(&rows).map_err(ScoreError::Output)?;
            written += rows.len();
            if let (Some(sink), Some(n)) = (&self.sink, table_rows.as_mut()) {
                *n += sink.write(scored_at, &rows).await?;
            }
        }
        Ok(ScoreSummary {
            model_version: model.metadata.version,
            features_as_of: snapshot.as_of_rfc3339().to_string(),
            snapshot_users: snapshot.len(),
            eligible_users: users.len(),
            left_out,
            left_out_reason,
            written,
            table_rows,
            calibrated: model.metadata.calibration.is_some(),
            secs: started.elapsed().as_secs_f64(),
        })
    }
}

fn score_chunk(
    model: &LoadedModel,
    snapshot: &FeatureSnapshot,
    users: &[u64],
    reasons: Option<usize>,
) -> Result<Vec<ScoredUser>, ScoreError> {
    let n = model.metadata.feature_names.len();
    let mut rows = Vec::with_capacity(users.len() * n);
    for u in users {
        rows.extend(snapshot.features(*u).unwrap_or_else(|| vec![0.0; n]));
    }
    let raw = model.classifier.predict_proba(&rows)?;
    let contributions = match reasons {
        Some(_) => Some(model.classifier.contributions(&rows)?),
        None => None,
    };
    let as_of = snapshot.as_of_rfc3339().to_string();
    Ok(users
        .iter()
        .enumerate()
        .map(|(i, &key)| ScoredUser {
            // Names are filled in by the caller (a store lookup).
            user_id: crate::domain::user::UserId::Int(key),
            churn_probability: model.metadata.served_probability(raw[i]),
            raw_probability: raw[i],
            model_version: model.metadata.version,
            features_as_of: as_of.clone(),
            reasons: match (&contributions, reasons) {
                (Some(c), Some(k)) => {
                    explain(
                        &model.metadata.feature_names,
                        &rows[i * n..(i + 1) * n],
                        &c[i * (n + 1)..(i + 1) * (n + 1)],
                        k,
                    )
                    .contributions
                }
                _ => Vec::new(),
            },
        })
        .collect())
}
