//! `PredictChurn`: a user's churn probability from the serving state — the
//! user's features fed to the current production model.
//!
//! With live features on (the default), the features are the user's as of
//! now ([`crate::application::live_features`]): a cached live row, or one
//! read from the store; the snapshot serves only when live features fall
//! back. Off, they are the current snapshot's: a lookup in the score table
//! precomputed at the last swap, or (until it is ready) a tree walk.

use std::sync::Arc;

use serde::Serialize;

use crate::application::live_features::{LiveFeatures, Lookup};
use crate::application::manage_models::LoadedModel;
use crate::application::ports::{EventStore, StoreError};
use crate::application::serving_state::{ScoreTable, ServingState};
use crate::domain::explanation::{Explanation, explain};
use crate::domain::model::ModelError;
use crate::domain::snapshot::FeatureSnapshot;
use crate::domain::time::format_rfc3339;
use crate::domain::user::{UserId, is_name_key};
use crate::telemetry::metric_names;

/// Why a prediction cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("no production model is loaded yet: train one (`churn train` or POST /admin/retrain)")]
    NoProductionModel,
    /// The production alias names a version this server cannot serve
    /// (e.g. it was trained on another feature spec): the reason, with
    /// what to do.
    #[error("the production model cannot be served: {0}")]
    ModelNotServable(Arc<String>),
    #[error(
        "no feature snapshot is loaded yet: build one (`churn build-features` or POST /admin/features/rebuild)"
    )]
    NoFeatures,
    #[error("user {0} is unknown: no events at or before the feature snapshot")]
    UnknownUser(UserId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("prediction task failed: {0}")]
    Join(String),
    #[error("the model failed: {0}")]
    Model(#[from] ModelError),
}

/// Why no model serves: never trained, or the production version was
/// refused (its reason is kept by the serving state).
fn no_model(state: &ServingState) -> PredictError {
    match state.alias_problem() {
        Some(problem) => PredictError::ModelNotServable(problem),
        None => PredictError::NoProductionModel,
    }
}

/// One prediction in the seed's shape plus `features_as_of`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Prediction {
    /// The user, in the form the request (or the producer) sent it.
    pub user_id: UserId,
    pub churn_probability: f64,
    pub model_version: String,
    pub timestamp: String,
    pub features_as_of: String,
    /// The model's own probability before calibration; present when the
    /// model carries a calibration (`churn_probability` is then the
    /// calibrated one, and explanations add up to this one's log-odds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_probability: Option<f64>,
    /// Present when asked for (`explain=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
}

/// The at-risk list and who was left out of it.
#[derive(Debug, Clone)]
pub struct AtRisk {
    pub predictions: Vec<Prediction>,
    /// Users of the serving snapshot.
    pub snapshot_users: usize,
    /// Users the list was ranked from (the eligible ones, when known).
    pub ranked_users: usize,
    pub left_out: usize,
    /// Why they were left out (empty when nobody was).
    pub left_out_reason: String,
}

/// With live features, how many snapshot-ranked candidates per listed
/// user are re-scored as of now.
const LIVE_AT_RISK_CANDIDATES: usize = 4;

/// The current second as RFC 3339, formatted once per second per thread
/// (chrono's formatter was a visible share of a prediction's cost).
fn now_rfc3339() -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Utc::now().timestamp();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != now {
            *c = (now, format_rfc3339(now));
        }
        c.1.clone()
    })
}

/// The prediction use case.
#[derive(Clone)]
pub struct PredictChurn {
    state: ServingState,
    /// Resolved once: the recorder's lookup by name on every prediction
    /// was a measurable share of its cost.
    served: metrics::Counter,
    /// Where names of string-keyed users are kept, for lists ranked from
    /// the snapshot (which holds keys only).
    names: Option<Arc<dyn EventStore>>,
    /// Features as of now, when on.
    live: Option<LiveFeatures>,
}

impl PredictChurn {
    /// Build it after the metrics recorder is installed (startup does), or
    /// its counter records nowhere.
    pub fn new(state: ServingState) -> Self {
        Self {
            state,
            served: metrics::counter!(metric_names::PREDICTIONS_TOTAL),
            names: None,
            live: None,
        }
    }

    /// Predictions use features as of now (when `live` is enabled).
    pub fn with_live(mut self, live: LiveFeatures) -> Self {
        self.live = live.enabled().then_some(live);
        self
    }

    /// The live features, when on.
    pub fn live(&self) -> Option<&LiveFeatures> {
        self.live.as_ref()
    }

    /// The answer without waiting: `None` when live features are on and
    /// the user's cached row does not answer now (the caller then awaits
    /// [`PredictChurn::predict_now`], which may read the store).
    pub fn predict_cached(
        &self,
        user: &UserId,
        explain: Option<usize>,
    ) -> Option<Result<Prediction, PredictError>> {
        match &self.live {
            None => Some(self.predict_explained(user, explain)),
            Some(live) => {
                let now = chrono::Utc::now().timestamp();
                let values = live.cached(user.key(), now)?;
                Some(self.answer_from(user, &values, now, explain))
            }
        }
    }

    /// Predicts for one user with features as of now when live features
    /// are on (falling back to the snapshot past a live bound), else from
    /// the snapshot.
    ///
    /// # Errors
    /// [`PredictError`]: no model, no features, unknown user, model failure.
    pub async fn predict_now(
        &self,
        user: &UserId,
        explain: Option<usize>,
    ) -> Result<Prediction, PredictError> {
        if let Some(live) = &self.live {
            let now = chrono::Utc::now().timestamp();
            match live.features_at(user.key(), now).await {
                Lookup::Features(values) => return self.answer_from(user, &values, now, explain),
                Lookup::Unknown => return Err(PredictError::UnknownUser(user.clone())),
                Lookup::Fallback(_) => {}
            }
        }
        self.predict_explained(user, explain)
    }

    /// The model run on features evaluated at `as_of`.
    fn answer_from(
        &self,
        user: &UserId,
        values: &[f64],
        as_of: i64,
        explain: Option<usize>,
    ) -> Result<Prediction, PredictError> {
        let model = self.state.model().ok_or_else(|| no_model(&self.state))?;
        let (p, explanation) = match explain {
            None => (model.classifier.predict_proba(values)?[0], None),
            Some(k) => {
                let (p, e) = Self::explain_values(&model, values, k)?;
                (p, Some(e))
            }
        };
        self.served.increment(1);
        Ok(Prediction {
            user_id: user.clone(),
            churn_probability: model.metadata.served_probability(p),
            raw_probability: model.metadata.calibration.is_some().then_some(p),
            model_version: model.metadata.version.to_string(),
            timestamp: now_rfc3339(),
            features_as_of: format_rfc3339(as_of),
            explanation,
        })
    }

    /// [`PredictChurn::predict_batch`] with features as of now (one `now`
    /// for the whole batch) when live features are on.
    ///
    /// # Errors
    /// [`PredictError`] when nothing can be predicted (no model/features).
    pub async fn predict_batch_now(
        &self,
        user_ids: &[UserId],
        explain: Option<usize>,
    ) -> Result<Vec<Result<Prediction, PredictError>>, PredictError> {
        let Some(live) = &self.live else {
            return self.predict_batch(user_ids, explain);
        };
        self.state.model().ok_or_else(|| no_model(&self.state))?;
        let now = chrono::Utc::now().timestamp();
        let mut out = Vec::with_capacity(user_ids.len());
        for user in user_ids {
            out.push(match live.features_at(user.key(), now).await {
                Lookup::Features(values) => self.answer_from(user, &values, now, explain),
                Lookup::Unknown => Err(PredictError::UnknownUser(user.clone())),
                Lookup::Fallback(_) => self.predict_explained(user, explain),
            });
        }
        Ok(out)
    }

    /// Lists ([`PredictChurn::at_risk_named`]) answer string ids by name,
    /// looked up in `store`.
    pub fn with_names(mut self, store: Arc<dyn EventStore>) -> Self {
        self.names = Some(store);
        self
    }

    pub fn state(&self) -> &ServingState {
        &self.state
    }

    /// Predicts for one user.
    ///
    /// # Errors
    /// [`PredictError`]: no model, no features, unknown user, model failure.
    pub fn predict(&self, user: &UserId) -> Result<Prediction, PredictError> {
        self.predict_explained(user, None)
    }

    /// Predicts for one user; with `explain = Some(k)` the answer carries
    /// the `k` largest feature contributions.
    ///
    /// # Errors
    /// [`PredictError`]: no model, no features, unknown user, model failure.
    pub fn predict_explained(
        &self,
        user: &UserId,
        explain: Option<usize>,
    ) -> Result<Prediction, PredictError> {
        let model = self.state.model().ok_or_else(|| no_model(&self.state))?;
        let features = self.state.features().ok_or(PredictError::NoFeatures)?;
        let user_id = user.key();
        let row = features
            .row_of(user_id)
            .ok_or_else(|| PredictError::UnknownUser(user.clone()))?;
        let (p, explanation) = match explain {
            None => {
                let table = self.state.scores();
                let p = Self::score(table.as_deref(), &model, &features, user_id, row)?;
                (p, None)
            }
            Some(k) => {
                let (p, e) = Self::explained(&model, &features, user_id, k)?;
                (p, Some(e))
            }
        };
        self.served.increment(1);
        Ok(Prediction {
            user_id: user.clone(),
            churn_probability: model.metadata.served_probability(p),
            raw_probability: model.metadata.calibration.is_some().then_some(p),
            model_version: model.metadata.version.to_string(),
            timestamp: now_rfc3339(),
            features_as_of: features.as_of_rfc3339().to_string(),
            explanation,
        })
    }

    /// The raw probability and its explanation from one model run on the
    /// user's features, so the sum rule holds for exactly the (raw)
    /// probability returned.
    fn explained(
        model: &LoadedModel,
        features: &FeatureSnapshot,
        user_id: u64,
        top_k: usize,
    ) -> Result<(f64, Explanation), PredictError> {
        let values = features
            .features(user_id)
            .ok_or(PredictError::UnknownUser(UserId::Int(user_id)))?;
        Self::explain_values(model, &values, top_k)
    }

    fn explain_values(
        model: &LoadedModel,
        values: &[f64],
        top_k: usize,
    ) -> Result<(f64, Explanation), PredictError> {
        let contributions = model.classifier.contributions(values)?;
        let logit: f64 = contributions.iter().sum();
        let p = crate::domain::math::sigmoid(logit);
        let e = explain(&model.metadata.feature_names, values, &contributions, top_k);
        Ok((p, e))
    }

    /// The precomputed score when the table belongs to exactly this model
    /// and snapshot, else the model run live on the user's features.
    fn score(
        table: Option<&ScoreTable>,
        model: &LoadedModel,
        features: &FeatureSnapshot,
        user_id: u64,
        row: usize,
    ) -> Result<f64, PredictError> {
        if let Some(table) = table
            && table.matches(model, features)
            && let Some(p) = table.score(row)
        {
            return Ok(p);
        }
        let values = features
            .features(user_id)
            .ok_or(PredictError::UnknownUser(UserId::Int(user_id)))?;
        Ok(model.classifier.predict_proba(&values)?[0])
    }

    /// The `limit` users most likely to churn, most likely first, each with
    /// its `top_k` reasons: the retention team's call list. Only users
    /// eligible under the churn definition at the snapshot's time are
    /// ranked (the model's population: a user gone for a year is not "at
    /// risk"); the list says how many were left out. Scores come from the
    /// score table when it matches, else from one pass of the model over
    /// the snapshot (CPU work: call it off the runtime).
    ///
    /// # Errors
    /// [`PredictError`] when nothing can be predicted (no model/features).
    pub fn at_risk(&self, limit: usize, top_k: usize) -> Result<AtRisk, PredictError> {
        let model = self.state.model().ok_or_else(|| no_model(&self.state))?;
        let features = self.state.features().ok_or(PredictError::NoFeatures)?;
        let eligibility = self.state.eligibility().filter(|e| e.matches(&features));
        let table = self.state.scores().filter(|t| t.matches(&model, &features));
        let live = match &table {
            Some(_) => Vec::new(),
            None => {
                let mut scores = Vec::with_capacity(features.len());
                let mut start = 0;
                while start < features.len() {
                    let end = (start + 8_192).min(features.len());
                    scores.extend(
                        model
                            .classifier
                            .predict_proba(&features.rows_f64(start..end))?,
                    );
                    start = end;
                }
                scores
            }
        };
        let score = |row: usize| match &table {
            Some(t) => t.score(row).unwrap_or(0.0),
            None => live.get(row).copied().unwrap_or(0.0),
        };
        let mut ranked: Vec<(f64, u64)> = features
            .users()
            .filter(|(_, r)| eligibility.as_ref().is_none_or(|e| e.is_eligible(*r)))
            .map(|(u, r)| (score(r), u))
            .collect();
        let ranked_users = ranked.len();
        let by_risk = |a: &(f64, u64), b: &(f64, u64)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if ranked.len() > limit {
            ranked.select_nth_unstable_by(limit, by_risk);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(by_risk);
        // Keys stand in for ids here: names are filled in by
        // `at_risk_named`, which can reach the store.
        let users: Vec<UserId> = ranked.into_iter().map(|(_, u)| UserId::Int(u)).collect();
        let predictions = self
            .predict_batch(&users, Some(top_k))?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let left_out = features.len() - ranked_users;
        Ok(AtRisk {
            predictions,
            snapshot_users: features.len(),
            ranked_users,
            left_out,
            left_out_reason: match (&eligibility, self.state.policy()) {
                (Some(_), Some(p)) => format!(
                    "not eligible at {}: fewer than {} activity events in the {} days before it",
                    features.as_of_rfc3339(),
                    p.min_events,
                    p.lookback_days
                ),
                _ => String::new(),
            },
        })
    }

    /// [`PredictChurn::at_risk`] off the runtime, with string ids answered
    /// by name.
    ///
    /// # Errors
    /// [`PredictError`] when nothing can be predicted or the names cannot
    /// be read.
    pub async fn at_risk_named(&self, limit: usize, top_k: usize) -> Result<AtRisk, PredictError> {
        let this = self.clone();
        // With live features the snapshot ranks candidates (a few times
        // the list), which are re-scored as of now and ranked again: a
        // user's last events move them in or out of the list.
        let candidates = match &self.live {
            Some(_) => limit.saturating_mul(LIVE_AT_RISK_CANDIDATES),
            None => limit,
        };
        let mut list = tokio::task::spawn_blocking(move || this.at_risk(candidates, top_k))
            .await
            .map_err(|e| PredictError::Join(e.to_string()))??;
        if self.live.is_some() {
            let users: Vec<UserId> = list.predictions.iter().map(|p| p.user_id.clone()).collect();
            let mut now: Vec<Prediction> = self
                .predict_batch_now(&users, Some(top_k))
                .await?
                .into_iter()
                .filter_map(Result::ok)
                .collect();
            now.sort_by(|a, b| {
                b.churn_probability
                    .total_cmp(&a.churn_probability)
                    .then(a.user_id.key().cmp(&b.user_id.key()))
            });
            now.truncate(limit);
            list.predictions = now;
        }
        let keys: Vec<u64> = list.predictions.iter().map(|p| p.user_id.key()).collect();
        if let Some(store) = &self.names
            && keys.iter().any(|k| is_name_key(*k))
        {
            let ids = crate::application::user_ids::user_ids(&**store, &keys).await?;
            for (p, id) in list.predictions.iter_mut().zip(ids) {
                p.user_id = id;
            }
        }
        Ok(list)
    }

    /// Predicts for many users against one consistent model and snapshot.
    /// Per-user failures (unknown users) are returned next to successes.
    ///
    /// # Errors
    /// [`PredictError`] when nothing can be predicted (no model/features).
    pub fn predict_batch(
        &self,
        user_ids: &[UserId],
        explain: Option<usize>,
    ) -> Result<Vec<Result<Prediction, PredictError>>, PredictError> {
        let model = self.state.model().ok_or_else(|| no_model(&self.state))?;
        let features = self.state.features().ok_or(PredictError::NoFeatures)?;
        let timestamp = now_rfc3339();
        let version = model.metadata.version.to_string();
        let as_of = features.as_of_rfc3339().to_string();
        // One table for the whole batch: one consistent model + snapshot.
        let table = self.state.scores();
        let mut served = 0u64;
        let results = user_ids
            .iter()
            .map(|user| {
                let u = user.key();
                let row = features
                    .row_of(u)
                    .ok_or_else(|| PredictError::UnknownUser(user.clone()))?;
                let (p, explanation) = match explain {
                    None => (
                        Self::score(table.as_deref(), &model, &features, u, row)?,
                        None,
                    ),
                    Some(k) => {
                        let (p, e) = Self::explained(&model, &features, u, k)?;
                        (p, Some(e))
                    }
                };
                served += 1;
                Ok(Prediction {
                    user_id: user.clone(),
                    churn_probability: model.metadata.served_probability(p),
                    raw_probability: model.metadata.calibration.is_some().then_some(p),
                    model_version: version.clone(),
                    timestamp: timestamp.clone(),
                    features_as_of: as_of.clone(),
                    explanation,
                })
            })
            .collect();
        self.served.increment(served);
        Ok(results)
    }
}
