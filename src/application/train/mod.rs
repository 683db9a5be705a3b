//! `TrainModel`: the train → evaluate → register → gate step, one file per
//! step: [`plan`] (cutoffs), [`sets`] (point-in-time rows, sampling, the
//! two validation halves), [`fit`] (both candidates and the recency rule),
//! [`choose`] (which candidate, constant features), [`calibrate`]
//! (calibration, reliability, curves), [`reference`] (the drift reference)
//! and [`register`] (metadata, registration, champion/challenger). The
//! decisions themselves (cutoff plan, promotion) are pure, in
//! `domain::training`.
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
//!    features are constant, when a feature's validation values leave its
//!    training range ([`ranges`]), or when the plan had to shrink, naming
//!    the setting to change.

mod calibrate;
mod choose;
mod fit;
mod outcome;
mod plan;
mod ranges;
mod reference;
mod register;
mod sets;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Mutex;

use crate::application::build_features::AsOf;
use crate::application::leadership::Fence;
use crate::application::manage_models::{LATEST, ManageModels, ModelsError, PRODUCTION};
use crate::application::ports::{EventStore, FeatureStore, ModelTrainer, StoreError};
use crate::domain::calibration::CalibrationMethod;
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::metrics::MetricError;
use crate::domain::model::ModelError;
use crate::domain::training::{ModelSelection, PromotionPolicy, decide_promotion};
use crate::telemetry::metric_names;

pub use outcome::{PhaseSecs, Sampling, TrainReport, TrainingRows};
pub use plan::Plan;

use choose::constant_features;

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

    /// Runs one training; see the module docs for the steps.
    ///
    /// # Errors
    /// [`TrainError::Busy`] if a run is in progress, otherwise whatever step
    /// failed (nothing is registered unless training and evaluation passed).
    pub async fn run(&self) -> Result<TrainReport, TrainError> {
        self.run_fenced(None).await
    }

    /// As [`TrainModel::run`] for a scheduled job: its lease is re-checked
    /// before the version is registered, the promotion carries its token,
    /// and the version records which tick and term produced it.
    ///
    /// # Errors
    /// As [`TrainModel::run`], plus `Fenced` once another replica leads.
    pub async fn run_fenced(&self, fence: Option<&Fence>) -> Result<TrainReport, TrainError> {
        let _guard = self.running.try_lock().map_err(|_| TrainError::Busy)?;
        let started = Instant::now();
        let result = self.run_locked(fence).await;
        match &result {
            Ok(r) => {
                metrics::histogram!(metric_names::TRAINING_DURATION_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::gauge!(metric_names::TRAINING_LAST_SUCCESS_TIMESTAMP_SECONDS)
                    .set(chrono::Utc::now().timestamp() as f64);
                tracing::info!(version = r.version, auc = r.metrics.auc, promoted = r.promoted, decision = %r.decision, "training finished");
            }
            Err(e) => {
                metrics::counter!(metric_names::JOB_FAILURES_TOTAL, "job" => "train").increment(1);
                tracing::error!(error = %e, "training failed");
            }
        }
        result
    }

    /// The rows a run trains and validates on (same plan, same sample),
    /// with their cutoffs, without fitting anything: `churn train
    /// --export-sets`.
    ///
    /// # Errors
    /// As [`TrainModel::run`] before fitting.
    pub async fn training_rows(&self) -> Result<TrainingRows, TrainError> {
        let sets = self.build_sets(false).await?;
        let halved = sets.select.len() < sets.validation.len();
        drop((sets.select, sets.report));
        Ok(TrainingRows {
            halved,
            train: Arc::unwrap_or_clone(sets.train),
            train_cutoffs: sets.plan.train_cutoffs,
            rows_per_cutoff: sets.rows_per_cutoff,
            validation: Arc::unwrap_or_clone(sets.validation),
            validation_cutoff: sets.plan.validation_cutoff,
        })
    }

    async fn run_locked(&self, fence: Option<&Fence>) -> Result<TrainReport, TrainError> {
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
        warnings.extend(
            ranges::out_of_range(&sets.train, &sets.validation)
                .iter()
                .map(ranges::OutOfRange::warning),
        );
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
        metadata.scheduled = fence.map(Fence::run);
        let bytes = chosen.classifier.to_bytes()?;
        if let Some(f) = fence {
            f.check().await.map_err(ModelsError::from)?;
        }
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
            self.models
                .promote_fenced(version, &decision.to_string(), fence.map(Fence::token))
                .await?;
            metrics::gauge!(metric_names::MODEL_VALIDATION_AUC).set(chosen.report.auc);
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
}
