//! The serving state: the production model and the latest feature snapshot,
//! each behind an `ArcSwap`, so request handlers read them lock-free while
//! background tasks replace them atomically.
//!
//! [`ServingState::reload_model`] and [`ServingState::reload_features`] do
//! the swaps in a fixed order: load → verify (checksum in the registry,
//! feature schema here) → canary prediction → store → update metrics. A
//! candidate that fails any step is logged and discarded; the previous model
//! keeps serving.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::application::manage_models::{LoadedModel, ManageModels, ModelsError, PRODUCTION};
use crate::application::ports::{FeatureStore, RegistryError, StoreError};
use crate::domain::drift::{
    DRIFT_SAMPLE_ROWS, DriftReport, DriftThresholds, ServingSample, measure,
};
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::model::ModelError;
use crate::domain::snapshot::FeatureSnapshot;
use crate::telemetry::metric_names;

/// Why a candidate was not swapped in.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    Models(#[from] ModelsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("feature schema mismatch: {0}")]
    Schema(String),
    #[error("canary prediction failed: {0}")]
    Canary(String),
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ReloadOutcome {
    Swapped {
        version: u64,
    },
    Unchanged {
        version: u64,
    },
    NoProductionModel,
    /// The alias names a version that cannot be served and nothing was
    /// serving: an earlier production version (from the alias's history)
    /// serves instead, until the alias is moved.
    Fallback {
        version: u64,
        refused: u64,
    },
}

/// Rows of the serving snapshot a candidate model scores before it swaps in.
const CANARY_ROWS: usize = 256;

/// Every user's probability under one (model, snapshot) pair, indexed by
/// snapshot row. Predictions change only when either side is swapped, so
/// scoring everyone once per swap turns `/predict` into a lookup.
#[derive(Debug)]
pub struct ScoreTable {
    model_version: u64,
    features_as_of: i64,
    features_created_at: i64,
    scores: Vec<f64>,
}

impl ScoreTable {
    /// Whether the table was computed from exactly this model and snapshot.
    pub fn matches(&self, model: &LoadedModel, features: &FeatureSnapshot) -> bool {
        self.model_version == model.metadata.version
            && self.features_as_of == features.as_of()
            && self.features_created_at == features.created_at()
            && self.scores.len() == features.len()
    }

    pub fn score(&self, row: usize) -> Option<f64> {
        self.scores.get(row).copied()
    }
}

/// Which rows of one snapshot are eligible under the churn definition at
/// its time: the population the model was trained on, what lists rank.
#[derive(Debug)]
pub struct Eligibility {
    features_as_of: i64,
    features_created_at: i64,
    rows: Vec<bool>,
    eligible: usize,
}

impl Eligibility {
    pub fn matches(&self, features: &FeatureSnapshot) -> bool {
        self.features_as_of == features.as_of()
            && self.features_created_at == features.created_at()
            && self.rows.len() == features.len()
    }

    pub fn is_eligible(&self, row: usize) -> bool {
        self.rows.get(row).copied().unwrap_or(false)
    }

    /// How many users of the snapshot are eligible.
    pub fn eligible(&self) -> usize {
        self.eligible
    }
}

/// Rows scored per model call while building a score table: bounds the
/// temporary row-major copy to a few MiB whatever the snapshot size.
const SCORE_CHUNK_ROWS: usize = 8_192;

/// Why canary scores cannot come from the model a version recorded, if
/// they cannot: a model that separated validation users (AUC above 0.55)
/// gives every distinct user the same score, or nearly all of them exactly
/// 0 or 1 (a tampered file whose checksum was recomputed did: 0.0/1.0 for
/// everyone). Only judged on at least 20 users with distinct rows.
fn degenerate(p: &[f64], rows: &[f64], n: usize) -> Option<String> {
    if p.len() < 20 || n == 0 {
        return None;
    }
    let first_row = &rows[..n];
    if rows.chunks_exact(n).all(|r| r == first_row) {
        return None;
    }
    let (lo, hi) = p
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if hi - lo < 1e-12 {
        return Some(format!(
            "gives all {} sampled users the same probability {lo}",
            p.len()
        ));
    }
    let extreme = p.iter().filter(|&&v| v == 0.0 || v == 1.0).count();
    if extreme * 10 >= p.len() * 9 {
        return Some(format!(
            "gives {extreme} of {} sampled users a probability of exactly 0 or 1",
            p.len()
        ));
    }
    None
}

/// Cheap-clone handle on the shared serving state.
#[derive(Clone)]
pub struct ServingState {
    model: Arc<ArcSwapOption<LoadedModel>>,
    features: Arc<ArcSwapOption<FeatureSnapshot>>,
    scores: Arc<ArcSwapOption<ScoreTable>>,
    spec: Arc<FeatureSpec>,
    /// Why the version the `production` alias names is not the one
    /// serving (it failed to load or verify); `None` when they agree.
    alias_problem: Arc<ArcSwapOption<String>>,
    /// The serving snapshot measured against the model's training
    /// reference, recomputed whenever either side is swapped.
    drift: Arc<ArcSwapOption<DriftReport>>,
    thresholds: DriftThresholds,
    /// The churn definition lists are restricted by, if set.
    policy: Option<LabelPolicy>,
    eligibility: Arc<ArcSwapOption<Eligibility>>,
}

impl ServingState {
    pub fn new(spec: Arc<FeatureSpec>) -> Self {
        Self {
            model: Arc::new(ArcSwapOption::empty()),
            features: Arc::new(ArcSwapOption::empty()),
            scores: Arc::new(ArcSwapOption::empty()),
            spec,
            alias_problem: Arc::new(ArcSwapOption::empty()),
            drift: Arc::new(ArcSwapOption::empty()),
            thresholds: DriftThresholds::default(),
            policy: None,
            eligibility: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// Lists (`/admin/at-risk`, the dashboard) rank only users eligible
    /// under `policy` at the snapshot's time, as `churn score` does.
    pub fn with_eligibility(mut self, policy: LabelPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Eligibility of the serving snapshot's rows, when known.
    pub fn eligibility(&self) -> Option<Arc<Eligibility>> {
        self.eligibility.load_full()
    }

    /// The policy eligibility is judged by, if set.
    pub fn policy(&self) -> Option<&LabelPolicy> {
        self.policy.as_ref()
    }

    /// Which rows of `snapshot` are eligible: from its own recency column
    /// when the definition is the default (every type is activity, one
    /// event suffices: eligible = last event within the lookback), else
    /// from the store.
    async fn eligible_rows(
        &self,
        store: &dyn FeatureStore,
        snapshot: &FeatureSnapshot,
    ) -> Result<Option<Eligibility>, StoreError> {
        let Some(policy) = &self.policy else {
            return Ok(None);
        };
        let simple = policy.activity_event_types.is_empty()
            && policy.churn_event_types.is_empty()
            && policy.min_events <= 1;
        let recency = self.spec.recency_index().filter(|&j| {
            let d = &self.spec.defs()[j];
            d.event_types.is_empty() && d.window_days.is_none() && d.amount_sign.is_none()
        });
        let lookback = f64::from(policy.lookback_days);
        let rows: Vec<bool> = match (simple, recency) {
            (true, Some(j)) => {
                let n = self.spec.len();
                let mut rows = Vec::with_capacity(snapshot.len());
                let mut start = 0;
                while start < snapshot.len() {
                    let end = (start + SCORE_CHUNK_ROWS).min(snapshot.len());
                    let block = snapshot.rows_f64(start..end);
                    rows.extend(block.chunks(n).map(|r| r[j] < lookback));
                    start = end;
                }
                rows
            }
            _ => {
                let users =
                    crate::application::score::eligible_users(store, policy, snapshot.as_of())
                        .await?;
                let mut rows = vec![false; snapshot.len()];
                for u in users {
                    if let Some(r) = snapshot.row_of(u) {
                        rows[r] = true;
                    }
                }
                rows
            }
        };
        Ok(Some(Eligibility {
            features_as_of: snapshot.as_of(),
            features_created_at: snapshot.created_at(),
            eligible: rows.iter().filter(|e| **e).count(),
            rows,
        }))
    }

    /// The thresholds of the drift alert (`[monitoring]`).
    pub fn with_drift_thresholds(mut self, thresholds: DriftThresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// The latest drift measurement, if the serving model has a reference
    /// and the score table for the serving snapshot is built.
    pub fn drift(&self) -> Option<Arc<DriftReport>> {
        self.drift.load_full()
    }

    /// Set while the `production` alias names a model this server could
    /// not load or verify (readiness reports it).
    pub fn alias_problem(&self) -> Option<Arc<String>> {
        self.alias_problem.load_full()
    }

    /// The model serving right now (a consistent `Arc`, even mid-swap).
    pub fn model(&self) -> Option<Arc<LoadedModel>> {
        self.model.load_full()
    }

    pub fn features(&self) -> Option<Arc<FeatureSnapshot>> {
        self.features.load_full()
    }

    /// The precomputed scores, if any (check [`ScoreTable::matches`]).
    pub fn scores(&self) -> Option<Arc<ScoreTable>> {
        self.scores.load_full()
    }

    /// Scores every user of the current snapshot with the current model, off
    /// the async runtime, and publishes the table if both are still current.
    /// Until it is published, predictions are computed live (same numbers).
    pub async fn rescore(&self) {
        let (Some(model), Some(features)) = (self.model(), self.features()) else {
            return;
        };
        if self.scores().is_some_and(|s| s.matches(&model, &features)) {
            return;
        }
        let (m, f) = (model.clone(), features.clone());
        let started = std::time::Instant::now();
        let computed = tokio::task::spawn_blocking(move || -> Result<ScoreTable, ModelError> {
            let mut scores = Vec::with_capacity(f.len());
            let mut start = 0;
            while start < f.len() {
                let end = (start + SCORE_CHUNK_ROWS).min(f.len());
                scores.extend(m.classifier.predict_proba(&f.rows_f64(start..end))?);
                start = end;
            }
            Ok(ScoreTable {
                model_version: m.metadata.version,
                features_as_of: f.as_of(),
                features_created_at: f.created_at(),
                scores,
            })
        })
        .await;
        match computed {
            Ok(Ok(table)) => {
                let current = (self.model(), self.features());
                if let (Some(cm), Some(cf)) = current
                    && table.matches(&cm, &cf)
                {
                    tracing::info!(
                        users = table.scores.len(),
                        secs = started.elapsed().as_secs_f64(),
                        "score table published"
                    );
                    let table = Arc::new(table);
                    self.scores.store(Some(table.clone()));
                    self.measure_drift(cm, cf, table).await;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "batch scoring failed; predictions stay live"),
            Err(e) => {
                tracing::warn!(error = %e, "batch scoring task failed; predictions stay live")
            }
        }
    }

    /// Measures the snapshot against the model's reference (off the
    /// runtime), publishes the report and sets the drift gauges. A model
    /// without a reference clears the report.
    async fn measure_drift(
        &self,
        model: Arc<LoadedModel>,
        features: Arc<FeatureSnapshot>,
        table: Arc<ScoreTable>,
    ) {
        if model.metadata.drift_reference.is_none() {
            self.drift.store(None);
            return;
        }
        let thresholds = self.thresholds;
        let measured = tokio::task::spawn_blocking(move || {
            let reference = model.metadata.drift_reference.as_ref()?;
            let (_, rows) = features.sample_rows(DRIFT_SAMPLE_ROWS);
            let users = features.users_by_row();
            let sample = ServingSample {
                names: &model.metadata.feature_names,
                rows: &rows,
                users: &users,
                scores: &table.scores,
            };
            Some(measure(
                reference,
                &sample,
                thresholds,
                model.metadata.version,
                features.as_of_rfc3339().to_string(),
            ))
        })
        .await;
        let Ok(Some(report)) = measured else {
            tracing::warn!("drift measurement failed");
            return;
        };
        for f in &report.features {
            metrics::gauge!(metric_names::FEATURE_PSI, "feature" => f.feature.clone()).set(f.psi);
        }
        metrics::gauge!(metric_names::PREDICTION_PSI).set(report.prediction_psi);
        if let Some(share) = report.new_user_share {
            metrics::gauge!(metric_names::NEW_USER_SHARE).set(share);
        }
        metrics::gauge!(metric_names::DRIFT_ALERT).set(if report.alert { 1.0 } else { 0.0 });
        if report.alert {
            tracing::warn!(alerts = ?report.alerts, "drift alert");
        } else {
            tracing::info!(
                prediction_psi = report.prediction_psi,
                "drift measured: no alert"
            );
        }
        self.drift.store(Some(Arc::new(report)));
    }

    /// Loads the `production` alias's model and swaps it in if it differs
    /// from the one serving.
    ///
    /// # Errors
    /// [`SwapError`] if the candidate fails a check; serving is unchanged.
    pub async fn reload_model(&self, models: &ManageModels) -> Result<ReloadOutcome, SwapError> {
        let alias = match models.registry().alias(PRODUCTION).await {
            Ok(alias) => alias,
            Err(e @ RegistryError::Corrupt(_)) => {
                self.alias_problem.store(Some(Arc::new(format!(
                    "the production alias cannot be read ({e}): promote a version to replace it \
                     (POST /admin/models/{{version}}/promote or `churn models promote`)"
                ))));
                return Err(ModelsError::from(e).into());
            }
            Err(e) => return Err(ModelsError::from(e).into()),
        };
        let Some(alias) = alias else {
            self.alias_problem.store(None);
            return Ok(ReloadOutcome::NoProductionModel);
        };
        if let Some(current) = self.model()
            && current.metadata.version == alias.version
        {
            self.alias_problem.store(None);
            return Ok(ReloadOutcome::Unchanged {
                version: alias.version,
            });
        }
        let installed = match models.load(alias.version).await {
            Ok(candidate) => self.install_model(candidate),
            Err(e) => Err(SwapError::from(e)),
        };
        match installed {
            Ok(outcome) => {
                self.alias_problem.store(None);
                self.rescore().await;
                Ok(outcome)
            }
            Err(e) => {
                let problem = format!(
                    "the production alias names version {}, which cannot be served: {e}",
                    alias.version
                );
                // A restarted server with nothing to serve: the versions
                // production named before, newest first, are known good.
                if self.model().is_none() {
                    for &earlier in alias.history.iter().rev() {
                        if earlier == alias.version {
                            continue;
                        }
                        let Ok(candidate) = models.load(earlier).await else {
                            continue;
                        };
                        if self.install_model(candidate).is_ok() {
                            tracing::error!(
                                refused = alias.version,
                                serving = earlier,
                                error = %e,
                                "production model unusable: serving the production version before it"
                            );
                            self.alias_problem.store(Some(Arc::new(format!(
                                "{problem}; serving version {earlier} (production before it) \
                                 until the alias is moved: POST /admin/models/{{version}}/promote \
                                 or /admin/models/rollback"
                            ))));
                            self.rescore().await;
                            return Ok(ReloadOutcome::Fallback {
                                version: earlier,
                                refused: alias.version,
                            });
                        }
                    }
                }
                self.alias_problem.store(Some(Arc::new(problem)));
                Err(e)
            }
        }
    }

    /// Verifies and swaps in an already loaded model.
    ///
    /// # Errors
    /// [`SwapError::Schema`] or [`SwapError::Canary`].
    pub fn install_model(&self, candidate: LoadedModel) -> Result<ReloadOutcome, SwapError> {
        let names = self.spec.names();
        if candidate.metadata.feature_names != names
            || candidate.metadata.feature_fingerprint != self.spec.fingerprint()
        {
            return Err(SwapError::Schema(format!(
                "version {} was trained on the feature spec {} ({} features) but this server \
                 computes {} ({} features): start it with the spec the version was \
                 trained on (features.spec_file), or train a version on this one",
                candidate.metadata.version,
                candidate.metadata.feature_fingerprint,
                candidate.metadata.feature_names.len(),
                self.spec.fingerprint(),
                names.len()
            )));
        }
        // Canary: score a sample of real users if features are loaded,
        // else one row of zeros.
        let (rows, count) = match self.features() {
            Some(f) if !f.is_empty() => {
                let (picked, rows) = f.sample_rows(CANARY_ROWS);
                (rows, picked.len())
            }
            _ => (vec![0.0; names.len()], 1),
        };
        let p = candidate
            .classifier
            .predict_proba(&rows)
            .map_err(|e: ModelError| SwapError::Canary(e.to_string()))?;
        if p.len() != count || p.iter().any(|p| !p.is_finite() || !(0.0..=1.0).contains(p)) {
            return Err(SwapError::Canary(format!(
                "probability out of range among {count} users: {:?}",
                p.iter()
                    .find(|p| !p.is_finite() || !(0.0..=1.0).contains(*p))
            )));
        }
        if let Some(reason) = (candidate.metadata.metrics.auc > 0.55)
            .then(|| degenerate(&p, &rows, names.len()))
            .flatten()
        {
            return Err(SwapError::Canary(format!(
                "version {} {reason} although it recorded a validation AUC of {:.3}: \
                 its model file does not behave as the version it claims to be",
                candidate.metadata.version, candidate.metadata.metrics.auc
            )));
        }
        let version = candidate.metadata.version;
        let auc = candidate.metadata.metrics.auc;
        self.model.store(Some(Arc::new(candidate)));
        metrics::gauge!(metric_names::MODEL_PRODUCTION_VERSION).set(version as f64);
        metrics::gauge!(metric_names::MODEL_VALIDATION_AUC).set(auc);
        metrics::counter!(metric_names::MODEL_SWAPS_TOTAL).increment(1);
        tracing::info!(version, auc, "production model swapped in");
        Ok(ReloadOutcome::Swapped { version })
    }

    /// Drops erased users from what is in memory: the serving snapshot
    /// (and with it their scores) and the serving model's drift reference
    /// sample. The stores and the registry are erased by the caller.
    pub async fn forget(&self, users: &[u64]) {
        if let Some(kept) = self.features().and_then(|f| f.without(users)) {
            metrics::gauge!(metric_names::FEATURE_SNAPSHOT_USERS).set(kept.len() as f64);
            self.features.store(Some(Arc::new(kept)));
            // Row numbers moved: eligibility is recomputed with the next
            // snapshot; until then lists rank every user.
            self.eligibility.store(None);
            self.rescore().await;
        }
        if let Some(model) = self.model()
            && model
                .metadata
                .drift_reference
                .as_ref()
                .is_some_and(|r| r.user_sample.users.iter().any(|u| users.contains(u)))
        {
            let mut kept = (*model).clone();
            if let Some(r) = kept.metadata.drift_reference.as_mut() {
                r.user_sample.users.retain(|u| !users.contains(u));
            }
            self.model.store(Some(Arc::new(kept)));
        }
    }

    /// Loads the newest stored snapshot as of `not_after` or earlier (the
    /// rebuild rule's instant, see `BuildFeatures::serving_limit`) and
    /// swaps it in if it is not the one serving. Returns the snapshot's
    /// `as_of`, if any.
    ///
    /// # Errors
    /// [`SwapError::Store`] or [`SwapError::Schema`]; serving is unchanged.
    pub async fn reload_features(
        &self,
        store: &dyn FeatureStore,
        not_after: Option<i64>,
    ) -> Result<Option<i64>, SwapError> {
        let Some(snapshot) = store.latest_snapshot(not_after).await? else {
            return Ok(None);
        };
        if snapshot.fingerprint() != self.spec.fingerprint() {
            return Err(SwapError::Schema(format!(
                "snapshot as of {} has features {} but this server computes {}",
                snapshot.as_of(),
                snapshot.fingerprint(),
                self.spec.fingerprint()
            )));
        }
        let as_of = snapshot.as_of();
        if let Some(current) = self.features()
            && current.as_of() == as_of
            && current.created_at() == snapshot.created_at()
        {
            return Ok(Some(as_of));
        }
        let eligibility = match self.eligible_rows(store, &snapshot).await {
            Ok(e) => e,
            Err(e) => {
                // Lists then rank every user of the snapshot, as before:
                // degraded, not failed.
                tracing::warn!(error = %e, "eligibility of the snapshot not computed");
                None
            }
        };
        metrics::gauge!(metric_names::FEATURE_SNAPSHOT_USERS).set(snapshot.len() as f64);
        tracing::info!(
            users = snapshot.len(),
            eligible = eligibility.as_ref().map(|e| e.eligible),
            as_of,
            "feature snapshot swapped in"
        );
        self.eligibility.store(eligibility.map(Arc::new));
        self.features.store(Some(Arc::new(snapshot)));
        self.rescore().await;
        Ok(Some(as_of))
    }
}

#[cfg(test)]
mod tests {
    use super::degenerate;

    #[test]
    fn degenerate_scores_are_named_and_ordinary_ones_pass() {
        let rows: Vec<f64> = (0..40).map(f64::from).collect();
        let spread: Vec<f64> = (0..40).map(|i| 0.1 + f64::from(i) / 100.0).collect();
        assert_eq!(degenerate(&spread, &rows, 1), None);
        let same = vec![0.3; 40];
        assert!(degenerate(&same, &rows, 1).is_some_and(|r| r.contains("same probability")));
        let mut extreme: Vec<f64> = (0..40).map(|i| f64::from(i % 2)).collect();
        extreme[0] = 0.4;
        assert!(degenerate(&extreme, &rows, 1).is_some_and(|r| r.contains("exactly 0 or 1")));
        // Identical users may well share a score; too few say nothing.
        assert_eq!(degenerate(&same, &[1.0; 40], 1), None);
        assert_eq!(degenerate(&same[..10], &rows[..10], 1), None);
    }
}
