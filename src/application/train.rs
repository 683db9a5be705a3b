//! `TrainModel`: the train → evaluate → register → gate step.
//!
//! 1. Picks cutoffs from the data: the validation cutoff T2 is the last full
//!    day minus the horizon (so its labels are fully observed); training
//!    cutoffs are T1 = T2 − H and up to `train_snapshots − 1` earlier ones, a
//!    step apart (fewer, with a warning, when the history is short).
//!    Training labels end at T2, so no validation label is ever seen.
//! 2. Builds point-in-time training sets through the feature store.
//! 3. Fits the GBDT and the logistic baseline off the async runtime.
//! 4. Splits the T2 users in two halves by a hash of the user id: the
//!    **selection** half chooses between the candidates; the **report**
//!    half, not used for that choice, gives the figures recorded for the
//!    registered version. (Choosing on a set and reporting the same set's
//!    AUC overstates it.) The promotion gate is a yes/no on the registered
//!    model, not a choice among candidates: it uses every T2 row, so champion
//!    and challenger are compared on as much data as there is.
//! 5. Registers the chosen candidate through [`ManageModels`] (which also
//!    exports it and moves `latest`).
//! 6. Champion/challenger: the current production model is re-scored on the
//!    T2 rows and [`decide_promotion`] (pure, in the domain) says whether
//!    `production` moves.
//! 7. Diagnostics: warns (and reports) when few users are eligible, when
//!    features are constant, or when the plan had to shrink, naming the
//!    setting to change.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::application::build_features::AsOf;
use crate::application::models::{LATEST, ManageModels, ModelsError, PRODUCTION};
use crate::application::ports::{EventStats, EventStore, FeatureStore, ModelTrainer, StoreError};
use crate::domain::calibration::{
    Calibration, CalibrationMethod, CalibrationReport, fit as fit_calibration, keep_calibration,
    reliability,
};
use crate::domain::curves::curves;
use crate::domain::drift::{DRIFT_SAMPLE_ROWS, DriftReference};
use crate::domain::explanation::global_importance;
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::metrics::{Evaluation, MetricError, evaluate, log_loss, roc_auc};
use crate::domain::model::{
    Classifier, Dataset, FeatureImportance, ModelError, ModelKind, ModelMetadata, ModelMetrics,
    ModelReport,
};
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::FeatureSnapshot;
use crate::domain::time::{DAY_SECS, floor_day, format_rfc3339};
use crate::domain::training::{
    Champion, ModelSelection, PromotionDecision, PromotionPolicy, decide_promotion,
};
use crate::telemetry::names;

/// Below this share of users eligible at the validation cutoff, training
/// warns: the label describes too few users to say much about the rest.
pub const MIN_ELIGIBLE_SHARE: f64 = 0.20;

/// Training parameters (from `[training]` in the config).
#[derive(Debug, Clone)]
pub struct TrainingOptions {
    pub model_name: String,
    pub policy: LabelPolicy,
    /// Explicit validation cutoff (seconds); `None` = derived from the data.
    pub validation_cutoff: Option<i64>,
    pub train_snapshots: u32,
    pub snapshot_step_days: u32,
    /// Cap on training rows and on validation rows (0 = none).
    pub max_training_rows: u64,
    pub promotion: PromotionPolicy,
    pub selection: ModelSelection,
    pub calibration: CalibrationMethod,
    /// When the drift reference is computed as of: the same rule the
    /// server's feature rebuilds follow (`schedule.features_as_of`), so
    /// clock-driven features (`days_since_*`) are compared like for like.
    pub reference_as_of: AsOf,
}

/// Failures of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("a training run is already in progress")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not enough data to train: {0}")]
    Insufficient(String),
    #[error("cannot evaluate: {0}")]
    Metric(#[from] MetricError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Models(#[from] ModelsError),
    #[error("training task failed: {0}")]
    Join(String),
}

/// What a training run did and decided (`churn train --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model_name: String,
    /// The MLflow receipt (run and model version) or why the export
    /// failed; absent when no exporter is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    pub version: u64,
    pub model_kind: ModelKind,
    /// Which candidate was registered and why.
    pub selection: String,
    /// Validation metrics of the GBDT candidate.
    pub gbdt_metrics: Evaluation,
    pub aliases: Vec<String>,
    pub promoted: bool,
    /// The gate's verdict in words (`promotion` has the figures).
    pub decision: String,
    pub promotion: PromotionDecision,
    pub production_version: Option<u64>,
    pub previous_production_version: Option<u64>,
    pub metrics: ModelMetrics,
    pub baseline_metrics: Evaluation,
    /// The production model's AUC re-measured on this validation set.
    pub previous_production_auc: Option<f64>,
    pub train_cutoffs: Vec<String>,
    pub validation_cutoff: String,
    pub train_rows: usize,
    /// Where the run's wall time went.
    pub phase_secs: PhaseSecs,
    /// Whether and how rows were sampled to stay within the cap.
    pub sampling: Sampling,
    /// Validation rows in all, and in the half the reported figures come from.
    pub validation_rows: usize,
    pub report_rows: usize,
    pub training_secs: f64,
    /// Share of the store's users eligible at the validation cutoff.
    pub eligible_share: f64,
    /// Features with one value across the training rows.
    pub constant_features: Vec<String>,
    /// What to look at, each naming the setting to change.
    pub warnings: Vec<String>,
    /// Reliability tables, the calibration decision and curves (report half).
    pub report: ModelReport,
    /// Whether a drift reference was stored with the version.
    pub drift_reference: bool,
}

/// Wall time of each step of a run, seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PhaseSecs {
    /// Point-in-time training and validation sets from the store.
    pub sets: f64,
    /// Both fits and their evaluations (`gbdt` and `logistic` are the fits
    /// alone).
    pub fit: f64,
    pub gbdt: f64,
    pub logistic: f64,
    /// Calibration, reliability tables and curves.
    pub report: f64,
    /// Scoring the serving snapshot for the drift reference.
    pub drift_reference: f64,
    /// Registering the version, re-scoring production, the gate.
    pub register_and_gate: f64,
}

/// How the training and validation rows were sampled
/// (`training.max_training_rows`); shares are 1 when every row was kept.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sampling {
    /// The cap (0 = none).
    pub max_rows: u64,
    /// Expected share of eligible users kept at each training cutoff.
    pub train_share: f64,
    /// Expected share of eligible users kept at the validation cutoff.
    pub validation_share: f64,
}

impl Sampling {
    pub fn applied(&self) -> bool {
        self.train_share < 1.0 || self.validation_share < 1.0
    }
}

/// The training use case. Only one run at a time per instance.
#[derive(Clone)]
pub struct TrainModel {
    events: Arc<dyn EventStore>,
    features: Arc<dyn FeatureStore>,
    trainer: Arc<dyn ModelTrainer>,
    models: ManageModels,
    spec: Arc<FeatureSpec>,
    options: TrainingOptions,
    running: Arc<Mutex<()>>,
}

/// A fitted candidate with its figures on both validation halves and on
/// all of the validation rows (the gate's).
struct Candidate {
    classifier: Arc<dyn Classifier>,
    select: Evaluation,
    report: Evaluation,
    all: Evaluation,
}

/// Both candidates and the recency rule.
struct Fitted {
    gbdt: Candidate,
    logistic: Candidate,
    recency_report: f64,
    recency_all: f64,
    train_rows: usize,
    train_churn_rate: f64,
    /// GBDT fit seconds.
    secs: f64,
    logistic_secs: f64,
}

/// The candidate that becomes the registered version.
struct Chosen {
    kind: ModelKind,
    classifier: Arc<dyn Classifier>,
    /// On all validation rows (what the promotion gate sees).
    gate: ModelMetrics,
    /// On the report half (what is recorded).
    report: ModelMetrics,
    selection: String,
}

/// Rows explained to measure global importance: enough for stable shares,
/// few enough to cost well under the training itself.
const IMPORTANCE_ROWS: usize = 2_000;

/// Global importance of the chosen model on (up to 2,000 of) the report
/// rows; empty when the model cannot explain them.
fn importance(names: &[String], chosen: &Chosen, report: &Dataset) -> Vec<FeatureImportance> {
    let n = report.n_features();
    let rows = &report.rows[..report.len().min(IMPORTANCE_ROWS) * n];
    match chosen.classifier.contributions(rows) {
        Ok(c) => global_importance(names, &c)
            .into_iter()
            .map(|(feature, importance)| FeatureImportance {
                feature,
                importance,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "feature importance not computed");
            Vec::new()
        }
    }
}

/// The cutoffs of one run and why there are fewer than configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub train_cutoffs: Vec<i64>,
    pub validation_cutoff: i64,
    pub warnings: Vec<String>,
}

/// Point-in-time training rows and the two validation halves of one run.
struct Sets {
    plan: Plan,
    sampling: Sampling,
    train: Arc<Dataset>,
    validation: Arc<Dataset>,
    select: Arc<Dataset>,
    report: Arc<Dataset>,
    eligible_share: f64,
    warnings: Vec<String>,
    /// Every user's features as serving's rebuilds compute them, read in
    /// the same pass as the sets: what drift is measured against.
    reference: Result<FeatureSnapshot, String>,
}

impl TrainModel {
    pub fn new(
        events: Arc<dyn EventStore>,
        features: Arc<dyn FeatureStore>,
        models: ManageModels,
        trainer: Arc<dyn ModelTrainer>,
        spec: Arc<FeatureSpec>,
        options: TrainingOptions,
    ) -> Self {
        Self {
            events,
            features,
            trainer,
            models,
            spec,
            options,
            running: Arc::new(Mutex::new(())),
        }
    }

    /// Whether a run is in progress (for 409 answers before queueing).
    pub fn is_busy(&self) -> bool {
        self.running.try_lock().is_err()
    }

    /// Chooses the validation cutoff and the training cutoffs.
    ///
    /// # Errors
    /// [`TrainError::Insufficient`] when the data does not span enough time.
    pub async fn plan_cutoffs(&self) -> Result<Plan, TrainError> {
        self.plan(&self.events.stats().await?)
    }

    fn plan(&self, stats: &EventStats) -> Result<Plan, TrainError> {
        let (Some(first), Some(last)) = (stats.first_event_time, stats.last_event_time) else {
            return Err(TrainError::Insufficient(
                "the event store is empty; ingest events first".into(),
            ));
        };
        let policy = &self.options.policy;
        let h = policy.horizon_secs();
        let validation = self
            .options
            .validation_cutoff
            .unwrap_or_else(|| floor_day(last) - h);
        if validation + h > last {
            return Err(TrainError::Insufficient(format!(
                "the validation horizon ({} + {} days) runs past the last event ({}): \
                 set training.validation_cutoff earlier or shorten training.horizon_days",
                format_rfc3339(validation),
                policy.horizon_days,
                format_rfc3339(last)
            )));
        }
        let step = i64::from(self.options.snapshot_step_days.max(1)) * DAY_SECS;
        let earliest_useful = first + policy.lookback_secs().min(h);
        let wanted = self.options.train_snapshots.max(1);
        let mut train: Vec<i64> = (0..wanted)
            .map(|k| validation - h - i64::from(k) * step)
            .filter(|t| *t > earliest_useful)
            .collect();
        train.reverse();
        if train.is_empty() {
            return Err(TrainError::Insufficient(format!(
                "events span {} to {}: training needs history before {} plus two horizons of {} days \
                 (shorten training.horizon_days or training.lookback_days)",
                format_rfc3339(first),
                format_rfc3339(last),
                format_rfc3339(validation - h),
                policy.horizon_days
            )));
        }
        let mut warnings = Vec::new();
        if train.len() < wanted as usize {
            warnings.push(format!(
                "the history ({} to {}) holds {} of the {wanted} training cutoffs \
                 (training.train_snapshots, {} days apart): training on fewer",
                format_rfc3339(first),
                format_rfc3339(last),
                train.len(),
                self.options.snapshot_step_days
            ));
        }
        Ok(Plan {
            train_cutoffs: train,
            validation_cutoff: validation,
            warnings,
        })
    }

    /// Runs one training; see the module docs for the steps.
    ///
    /// # Errors
    /// [`TrainError::Busy`] if a run is in progress, otherwise whatever step
    /// failed (nothing is registered unless training and evaluation passed).
    pub async fn run(&self) -> Result<TrainReport, TrainError> {
        let _guard = self.running.try_lock().map_err(|_| TrainError::Busy)?;
        let started = Instant::now();
        let result = self.run_locked().await;
        match &result {
            Ok(r) => {
                metrics::histogram!(names::TRAINING_DURATION_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::gauge!(names::TRAINING_LAST_SUCCESS_TIMESTAMP_SECONDS)
                    .set(chrono::Utc::now().timestamp() as f64);
                tracing::info!(version = r.version, auc = r.metrics.auc, promoted = r.promoted, decision = %r.decision, "training finished");
            }
            Err(e) => {
                metrics::counter!(names::JOB_FAILURES_TOTAL, "job" => "train").increment(1);
                tracing::error!(error = %e, "training failed");
            }
        }
        result
    }

    /// The rows a run trains and validates on (same plan, same sample),
    /// without fitting anything: `churn train --export-sets`.
    ///
    /// # Errors
    /// As [`TrainModel::run`] before fitting.
    pub async fn training_rows(&self) -> Result<(Dataset, Dataset), TrainError> {
        let sets = self.build_sets(false).await?;
        drop((sets.select, sets.report));
        Ok((
            Arc::unwrap_or_clone(sets.train),
            Arc::unwrap_or_clone(sets.validation),
        ))
    }

    async fn run_locked(&self) -> Result<TrainReport, TrainError> {
        let mut phases = PhaseSecs::default();
        let mut clock = Instant::now();
        let mut lap = |slot: &mut f64| {
            *slot = clock.elapsed().as_secs_f64();
            clock = Instant::now();
        };
        let mut sets = self.build_sets(true).await?;
        lap(&mut phases.sets);
        let fitted = self.fit(&sets).await?;
        lap(&mut phases.fit);
        phases.gbdt = fitted.secs;
        phases.logistic = fitted.logistic_secs;
        let chosen = self.choose(&fitted);
        let mut warnings = sets.warnings.clone();
        let constant_features = constant_features(&sets.train);
        if !constant_features.is_empty() {
            warnings.push(format!(
                "{} of {} features are constant in the training rows ({}{}): they tell the \
                 model nothing; declare features for your event types (features.spec_file, \
                 `churn features suggest`)",
                constant_features.len(),
                self.spec.len(),
                constant_features
                    .iter()
                    .take(8)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if constant_features.len() > 8 {
                    ", ..."
                } else {
                    ""
                }
            ));
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let (report, calibration) = self.report(&sets, &chosen).await?;
        lap(&mut phases.report);
        let snapshot = std::mem::replace(&mut sets.reference, Err(String::new()));
        let reference = self.drift_reference(&chosen, snapshot).await;
        lap(&mut phases.drift_reference);
        if reference.is_none() {
            warnings.push(
                "no drift reference was stored with this version: /admin/monitoring \
                 stays empty for it (see the log for why)"
                    .into(),
            );
        }
        let drift_reference = reference.is_some();
        let mut metadata = self.metadata(&sets, &fitted, &chosen);
        metadata.calibration = calibration;
        metadata.report = report.clone();
        metadata.drift_reference = reference;
        let bytes = chosen.classifier.to_bytes()?;
        let (registered, export) = self.models.register(metadata, bytes).await?;
        let version = registered.version;

        let champion = self.champion(&sets.validation).await?;
        let decision = decide_promotion(
            chosen.gate.auc,
            chosen.gate.recency_auc,
            champion,
            self.options.promotion,
        );
        let promoted = decision.promotes();
        if promoted {
            self.models.promote(version, &decision.to_string()).await?;
            metrics::gauge!(names::MODEL_VALIDATION_AUC).set(chosen.report.auc);
        }
        lap(&mut phases.register_and_gate);
        let previous = champion.map(|c| c.version);
        let mut aliases = vec![LATEST.to_string()];
        if promoted {
            aliases.push(PRODUCTION.to_string());
        }
        Ok(TrainReport {
            model_name: self.options.model_name.clone(),
            version,
            model_kind: chosen.kind,
            selection: chosen.selection,
            gbdt_metrics: fitted.gbdt.report,
            aliases,
            promoted,
            decision: decision.to_string(),
            promotion: decision,
            production_version: if promoted { Some(version) } else { previous },
            previous_production_version: previous,
            metrics: chosen.report,
            baseline_metrics: fitted.logistic.report,
            previous_production_auc: champion.and_then(|c| c.auc),
            train_cutoffs: registered.train_cutoffs.clone(),
            validation_cutoff: registered.validation_cutoff.clone(),
            train_rows: fitted.train_rows,
            phase_secs: phases,
            sampling: sets.sampling,
            validation_rows: sets.validation.len(),
            report_rows: sets.report.len(),
            training_secs: fitted.secs,
            eligible_share: sets.eligible_share,
            constant_features,
            warnings,
            export,
            report,
            drift_reference,
        })
    }

    /// Calibration, reliability and curves of the chosen model. The
    /// calibration is fitted on the selection half (never trained on) and
    /// judged on the report half (used for neither the fit nor the choice).
    async fn report(
        &self,
        sets: &Sets,
        chosen: &Chosen,
    ) -> Result<(ModelReport, Option<Calibration>), TrainError> {
        let method = self.options.calibration;
        let classifier = chosen.classifier.clone();
        let (select, report) = (sets.select.clone(), sets.report.clone());
        let held_out = !Arc::ptr_eq(&sets.select, &sets.report)
            && sets.select.user_ids != sets.report.user_ids;
        tokio::task::spawn_blocking(move || -> Result<_, TrainError> {
            let fit_raw = classifier.predict_proba(&select.rows)?;
            let raw = classifier.predict_proba(&report.rows)?;
            let raw_logloss = log_loss(&raw, &report.labels)?;
            let fitted = if held_out {
                fit_calibration(method, &fit_raw, &select.labels)
            } else {
                None
            };
            let calibrated: Option<Vec<f64>> = fitted
                .as_ref()
                .map(|c| raw.iter().map(|p| c.apply(*p)).collect());
            let calibrated_logloss = match &calibrated {
                Some(c) => Some(log_loss(c, &report.labels)?),
                None => None,
            };
            let keep = calibrated_logloss.is_some_and(|c| keep_calibration(raw_logloss, c));
            let decision = match (method, held_out, calibrated_logloss) {
                (CalibrationMethod::None, _, _) => {
                    "calibration is off (training.calibration)".into()
                }
                (_, false, _) => {
                    "not fitted: the validation set is too small to hold rows out".into()
                }
                (_, _, None) => "not fitted: the held-out rows hold one class".into(),
                (m, _, Some(c)) if keep => format!(
                    "{} kept: log loss {raw_logloss:.5} -> {c:.5} on rows used for neither fit",
                    m.as_str()
                ),
                (m, _, Some(c)) => format!(
                    "{} dropped: log loss {raw_logloss:.5} -> {c:.5} does not improve",
                    m.as_str()
                ),
            };
            let calibration = CalibrationReport {
                method,
                applied: keep,
                raw_logloss: Some(raw_logloss),
                calibrated_logloss,
                fitted_rows: if fitted.is_some() { select.len() } else { 0 },
                evaluated_rows: report.len(),
                decision,
            };
            let calibrated_reliability = match (&calibrated, keep) {
                (Some(c), true) => Some(reliability(c, &report.labels)),
                _ => None,
            };
            Ok((
                ModelReport {
                    reliability: reliability(&raw, &report.labels),
                    calibrated_reliability,
                    calibration: Some(calibration),
                    curves: curves(&raw, &report.labels),
                },
                fitted.filter(|_| keep),
            ))
        })
        .await
        .map_err(|e| TrainError::Join(e.to_string()))?
    }

    /// The chosen model's raw scores on `snapshot` (every user's features
    /// as of the time serving's rebuilds use: now, or the newest event, as
    /// serving computes them): what drift is measured against. `None`
    /// (logged) when it cannot be built: monitoring is then unavailable,
    /// training is not failed.
    async fn drift_reference(
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

    /// The stacked training set and the two validation halves, all point
    /// in time.
    /// With `reference`, the drift reference's snapshot is read in the
    /// same pass.
    async fn build_sets(&self, reference: bool) -> Result<Sets, TrainError> {
        // Read once: counting users can cost a pass over the events.
        let stats = self.events.stats().await?;
        let plan = self.plan(&stats)?;
        let policy = &self.options.policy;
        let max_rows = self.options.max_training_rows;
        let users = stats.users.max(1);
        let reference_at = match (reference, stats.last_event_time) {
            (false, _) => Err("not asked for".to_string()),
            (true, None) => Err("no events".to_string()),
            (true, Some(last)) => Ok(match self.options.reference_as_of {
                AsOf::Now => chrono::Utc::now().timestamp(),
                AsOf::EndOfData => last,
                AsOf::At(t) => t,
            }),
        };
        let snapshot_at = reference_at.as_ref().ok().copied();
        // No more users than the store holds can be eligible, so a share of
        // `max_rows / users` bounds the validation rows.
        let validation_sample = RowSample::capped(max_rows, users as f64, plan.validation_cutoff);
        let n_train = plan.train_cutoffs.len() as f64;
        let (validation, train, train_share, snapshot) =
            if max_rows == 0 || users as f64 * n_train <= max_rows as f64 {
                // The cap cannot bind (no cutoff has more eligible users than
                // the store has users): every cutoff in one pass over the
                // events.
                let mut cuts = vec![(plan.validation_cutoff, validation_sample)];
                cuts.extend(plan.train_cutoffs.iter().map(|&c| (c, RowSample::ALL)));
                let read = self
                    .features
                    .training_sets(&self.spec, policy, &cuts, snapshot_at)
                    .await?;
                let mut sets = read.sets.into_iter();
                let validation = sets.next().unwrap_or_default();
                let mut train = Dataset::default();
                sets.for_each(|s| train.extend(s));
                (validation, train, 1.0, read.snapshot)
            } else {
                // Validation first: the rows it keeps estimate how many users
                // are eligible per cutoff, which sizes the training share; the
                // training cutoffs then share one pass.
                let validation = self
                    .features
                    .training_set(
                        &self.spec,
                        policy,
                        plan.validation_cutoff,
                        validation_sample,
                    )
                    .await?;
                let eligible = validation.len() as f64 / validation_sample.share();
                let train_share = RowSample::capped(max_rows, eligible * n_train, 0).share();
                let cuts: Vec<(i64, RowSample)> = plan
                    .train_cutoffs
                    .iter()
                    .map(|&c| (c, RowSample::share_at(train_share, c)))
                    .collect();
                let read = self
                    .features
                    .training_sets(&self.spec, policy, &cuts, snapshot_at)
                    .await?;
                let mut train = Dataset::default();
                for set in read.sets {
                    train.extend(set);
                }
                (validation, train, train_share, read.snapshot)
            };
        let eligible = validation.len() as f64 / validation_sample.share();
        let eligible_share = eligible / users as f64;
        let sampling = Sampling {
            max_rows,
            train_share,
            validation_share: validation_sample.share(),
        };
        if sampling.applied() {
            tracing::info!(
                max_rows,
                train_share,
                validation_share = sampling.validation_share,
                train_rows = train.len(),
                validation_rows = validation.len(),
                "training rows sampled (training.max_training_rows)"
            );
        }
        let mut warnings = plan.warnings.clone();
        if eligible_share < MIN_ELIGIBLE_SHARE {
            warnings.push(format!(
                "only {:.1}% of the {users} users are eligible at {} (at least {} activity \
                 events in the {} days before it): raise training.lookback_days \
                 (`churn profile` shows the share per lookback)",
                100.0 * eligible_share,
                format_rfc3339(plan.validation_cutoff),
                policy.min_events,
                policy.lookback_days
            ));
        }
        check_set("training", &train)?;
        check_set("validation", &validation)?;
        let (select, report) = validation.split_by_user();
        let (select, report) = if usable(&select) && usable(&report) {
            (select, report)
        } else {
            warnings.push(format!(
                "the validation set ({} users) is too small to hold half out: \
                 the reported figures are the ones the choice was made on (optimistic); \
                 more users or a longer training.horizon_days help",
                validation.len()
            ));
            (validation.clone(), validation.clone())
        };
        Ok(Sets {
            plan,
            sampling,
            train: Arc::new(train),
            validation: Arc::new(validation),
            select: Arc::new(select),
            report: Arc::new(report),
            eligible_share,
            warnings,
            reference: reference_at.and_then(|_| match snapshot {
                Some(Ok(s)) => Ok(s),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the store returned no snapshot".to_string()),
            }),
        })
    }

    /// Fits both candidates off the async runtime.
    async fn fit(&self, sets: &Sets) -> Result<Fitted, TrainError> {
        let recency = self.spec.recency_index();
        let trainer = self.trainer.clone();
        let (train, all, select, report) = (
            sets.train.clone(),
            sets.validation.clone(),
            sets.select.clone(),
            sets.report.clone(),
        );
        tokio::task::spawn_blocking(move || {
            fit(&*trainer, &train, [&*select, &*report, &*all], recency)
        })
        .await
        .map_err(|e| TrainError::Join(e.to_string()))?
    }

    fn choose(&self, fitted: &Fitted) -> Chosen {
        let logistic_wins = self.options.selection == ModelSelection::Best
            && fitted.logistic.select.auc > fitted.gbdt.select.auc;
        let (kind, c) = if logistic_wins {
            (ModelKind::Logistic, &fitted.logistic)
        } else {
            (ModelKind::Gbdt, &fitted.gbdt)
        };
        Chosen {
            kind,
            classifier: c.classifier.clone(),
            gate: ModelMetrics::from_evaluation(c.all, fitted.recency_all),
            report: ModelMetrics::from_evaluation(c.report, fitted.recency_report),
            selection: format!(
                "selected {} on the selection half (AUC gbdt {:.4}, logistic {:.4}); figures from the other half",
                kind.as_str(),
                fitted.gbdt.select.auc,
                fitted.logistic.select.auc
            ),
        }
    }

    fn metadata(&self, sets: &Sets, fitted: &Fitted, chosen: &Chosen) -> ModelMetadata {
        let policy = &self.options.policy;
        ModelMetadata {
            name: self.options.model_name.clone(),
            version: 0,
            kind: chosen.kind,
            feature_names: self.spec.names(),
            feature_fingerprint: self.spec.fingerprint(),
            train_cutoffs: sets
                .plan
                .train_cutoffs
                .iter()
                .map(|t| format_rfc3339(*t))
                .collect(),
            validation_cutoff: format_rfc3339(sets.plan.validation_cutoff),
            horizon_days: policy.horizon_days,
            lookback_days: policy.lookback_days,
            train_rows: fitted.train_rows,
            validation_rows: sets.report.len(),
            train_churn_rate: fitted.train_churn_rate,
            validation_churn_rate: sets.report.positive_rate(),
            metrics: chosen.report,
            baseline_metrics: Some(fitted.logistic.report),
            hyperparameters: self.trainer.hyperparameters(chosen.kind),
            trained_at: chrono::Utc::now().to_rfc3339(),
            training_secs: fitted.secs,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            checksum_sha256: String::new(),
            feature_importance: importance(&self.spec.names(), chosen, &sets.report),
            calibration: None,
            report: ModelReport::default(),
            drift_reference: None,
        }
    }

    /// The production model re-scored on the validation rows. A champion
    /// that cannot be loaded is treated as absent: a broken champion must
    /// not block a healthy challenger.
    async fn champion(&self, validation: &Arc<Dataset>) -> Result<Option<Champion>, TrainError> {
        let champion = match self.models.load_production().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "current production model cannot be loaded; treating as absent");
                return Ok(None);
            }
        };
        let version = champion.metadata.version;
        if champion.metadata.feature_fingerprint != self.spec.fingerprint() {
            // Another spec: it cannot score these rows (nor serve this
            // spec's snapshots); its recorded figure measured something else.
            return Ok(Some(Champion { version, auc: None }));
        }
        let classifier = champion.classifier.clone();
        let val = validation.clone();
        let auc = tokio::task::spawn_blocking(move || -> Result<f64, TrainError> {
            let scores = classifier.predict_proba(&val.rows)?;
            Ok(roc_auc(&scores, &val.labels)?)
        })
        .await
        .map_err(|e| TrainError::Join(e.to_string()))??;
        Ok(Some(Champion {
            version,
            auc: Some(auc),
        }))
    }
}

fn check_set(which: &str, d: &Dataset) -> Result<(), TrainError> {
    let positives = d.labels.iter().filter(|l| **l).count();
    if d.len() < 20 || positives == 0 || positives == d.len() {
        return Err(TrainError::Insufficient(format!(
            "the {which} set has {} eligible users of which {positives} churned; \
             need at least 20 with both outcomes",
            d.len()
        )));
    }
    Ok(())
}

/// Fits both models and evaluates them, plus the recency rule, on both
/// validation halves.
fn fit(
    trainer: &dyn ModelTrainer,
    train: &Dataset,
    [select, report, all]: [&Dataset; 3],
    recency: Option<usize>,
) -> Result<Fitted, TrainError> {
    let started = Instant::now();
    let gbdt = trainer.train(ModelKind::Gbdt, train)?;
    let secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let logistic = trainer.train(ModelKind::Logistic, train)?;
    let logistic_secs = started.elapsed().as_secs_f64();
    let candidate = |classifier: Arc<dyn Classifier>| -> Result<Candidate, TrainError> {
        Ok(Candidate {
            select: evaluate(&classifier.predict_proba(&select.rows)?, &select.labels)?,
            report: evaluate(&classifier.predict_proba(&report.rows)?, &report.labels)?,
            all: evaluate(&classifier.predict_proba(&all.rows)?, &all.labels)?,
            classifier,
        })
    };
    // More days since the last event = more likely churned. Without a
    // recency feature the rule is chance.
    let recency_auc = |d: &Dataset| -> Result<f64, TrainError> {
        Ok(match recency {
            Some(j) => roc_auc(&d.column(j), &d.labels)?,
            None => 0.5,
        })
    };
    Ok(Fitted {
        gbdt: candidate(gbdt)?,
        logistic: candidate(logistic)?,
        recency_report: recency_auc(report)?,
        recency_all: recency_auc(all)?,
        train_rows: train.len(),
        train_churn_rate: train.positive_rate(),
        secs,
        logistic_secs,
    })
}

/// Whether a validation half can be evaluated (both outcomes present).
fn usable(d: &Dataset) -> bool {
    let positives = d.labels.iter().filter(|l| **l).count();
    d.len() >= 10 && positives > 0 && positives < d.len()
}

/// Names of the features with one value across all rows.
fn constant_features(d: &Dataset) -> Vec<String> {
    let n = d.n_features();
    if d.is_empty() {
        return Vec::new();
    }
    (0..n)
        .filter(|&j| {
            let first = d.row(0)[j];
            (1..d.len()).all(|i| d.row(i)[j] == first)
        })
        .map(|j| d.feature_names[j].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::generate::{GeneratorOptions, generate};
    use crate::application::ports::ModelRegistry;
    use crate::testing::{GradientTrainer, MemoryRegistry, MemoryStore};

    async fn setup() -> (TrainModel, MemoryRegistry, ManageModels) {
        setup_capped(0).await
    }

    async fn setup_capped(max_training_rows: u64) -> (TrainModel, MemoryRegistry, ManageModels) {
        let store = MemoryStore::new(3);
        let mut events = Vec::new();
        generate(
            GeneratorOptions {
                users: 1_000,
                days: 120,
                end: 1_780_000_000,
                seed: 3,
                churn_share: 0.35,
                string_ids: false,
            },
            |e| events.push(e),
        );
        store.append(events).await.unwrap();
        let registry = MemoryRegistry::default();
        let trainer: Arc<dyn ModelTrainer> = Arc::new(GradientTrainer::default());
        let models = ManageModels::new(Arc::new(registry.clone()), trainer.clone());
        let train = TrainModel::new(
            Arc::new(store.clone()),
            Arc::new(store),
            models.clone(),
            trainer,
            Arc::new(FeatureSpec::standard()),
            TrainingOptions {
                model_name: "churn_model".into(),
                policy: LabelPolicy::inactivity(30, 30),
                validation_cutoff: None,
                train_snapshots: 4,
                snapshot_step_days: 7,
                max_training_rows,
                promotion: PromotionPolicy {
                    tolerance: 0.01,
                    force: false,
                },
                selection: ModelSelection::Best,
                calibration: CalibrationMethod::Platt,
                reference_as_of: AsOf::EndOfData,
            },
        );
        (train, registry, models)
    }

    #[tokio::test]
    async fn registers_through_manage_models_and_gates_promotion() {
        let (train, registry, _models) = setup().await;
        let first = train.run().await.unwrap();
        assert_eq!(first.version, 1);
        assert!(first.metrics.auc > first.metrics.recency_auc, "{first:?}");
        assert_eq!(first.promotion, PromotionDecision::FirstModel);
        assert!(first.promoted);
        assert_eq!(registry.alias(LATEST).await.unwrap().unwrap().version, 1);
        assert_eq!(
            registry.alias(PRODUCTION).await.unwrap().unwrap().version,
            1
        );
        // Same data, same trainer: the challenger ties the champion, which
        // is within the tolerance.
        let second = train.run().await.unwrap();
        assert_eq!(second.version, 2);
        assert!(
            matches!(
                second.promotion,
                PromotionDecision::BeatsChampion { over: 1, .. }
            ),
            "{:?}",
            second.promotion
        );
        assert_eq!(second.previous_production_version, Some(1));
        // Same data, same trainer: the champion re-scored on the validation
        // rows scores what the challenger scores there.
        if let PromotionDecision::BeatsChampion {
            auc, champion_auc, ..
        } = second.promotion
        {
            assert!((auc - champion_auc).abs() < 1e-9, "{auc} vs {champion_auc}");
            assert_eq!(second.previous_production_auc, Some(champion_auc));
        }
        // The recorded figures come from the half the choice did not see.
        assert!(first.report_rows > 0 && first.report_rows < first.validation_rows);
        assert_eq!(
            registry.alias(PRODUCTION).await.unwrap().unwrap().history,
            vec![1]
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_registers_nothing_and_says_so() {
        let (train, registry, _models) = setup().await;
        registry.outage.set_failing(true);
        let err = train.run().await.unwrap_err();
        assert!(matches!(err, TrainError::Models(_)), "{err}");
        registry.outage.set_failing(false);
        assert!(registry.list().await.unwrap().is_empty());
        // And the lock was released: the next run works.
        assert_eq!(train.run().await.unwrap().version, 1);
    }

    #[tokio::test]
    async fn a_row_cap_samples_users_in_the_store_and_reports_it() {
        let full = setup().await.0.run().await.unwrap();
        assert!(!full.sampling.applied(), "{:?}", full.sampling);
        let cap = 1_000;
        let capped = setup_capped(cap).await.0.run().await.unwrap();
        assert!(capped.sampling.applied(), "{:?}", capped.sampling);
        // 1000 users, so validation keeps every one of them; four training
        // cutoffs of ~all users are sampled to about the cap.
        assert_eq!(capped.sampling.validation_share, 1.0);
        assert_eq!(capped.validation_rows, full.validation_rows);
        assert!(full.train_rows > 2 * cap as usize, "{}", full.train_rows);
        let rows = capped.train_rows as f64;
        assert!(
            (0.8 * cap as f64..=1.2 * cap as f64).contains(&rows),
            "{rows} training rows for a cap of {cap} (of {})",
            full.train_rows
        );
        // A uniform sample keeps the churn rate (no weights needed).
        assert!(capped.metrics.auc > 0.6, "{:?}", capped.metrics);
    }
}
