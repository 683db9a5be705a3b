//! `TrainModel`: the train → evaluate → register → gate step.
//!
//! 1. Picks cutoffs from the data: the validation cutoff T2 is the last full
//!    day minus the horizon (so its labels are fully observed); training
//!    cutoffs are T1 = T2 − H and `train_snapshots − 1` earlier ones, a step
//!    apart. Training labels end at T2, so no validation label is ever seen.
//! 2. Builds point-in-time training sets through the feature store.
//! 3. Fits the GBDT and the logistic baseline off the async runtime.
//! 4. Evaluates both, plus the recency-only rule, on the T2 set.
//! 5. Registers the GBDT as a new immutable version and moves `latest`.
//! 6. Champion/challenger: the current production model is re-scored on the
//!    same T2 set; `production` moves only if the challenger is not worse by
//!    more than the tolerance and beats the recency rule.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::application::models::{LATEST, ManageModels, ModelsError};
use crate::application::ports::{
    EventStore, FeatureStore, ModelRegistry, ModelTrainer, RegistryError, StoreError,
};
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::metrics::{Evaluation, MetricError, evaluate, roc_auc};
use crate::domain::model::{
    Classifier, Dataset, ModelError, ModelKind, ModelMetadata, ModelMetrics,
};
use crate::domain::time::{DAY_SECS, floor_day, format_rfc3339};
use crate::telemetry::names;

/// The feature the recency-only baseline ranks by.
pub const RECENCY_FEATURE: &str = "last_event_days_ago";

/// Training parameters (from `[training]` in the config).
#[derive(Debug, Clone)]
pub struct TrainingOptions {
    pub model_name: String,
    pub policy: LabelPolicy,
    /// Explicit validation cutoff (seconds); `None` = derived from the data.
    pub validation_cutoff: Option<i64>,
    pub train_snapshots: u32,
    pub snapshot_step_days: u32,
    /// How much lower than production's AUC a challenger may be and still
    /// be promoted (absolute AUC points).
    pub promotion_tolerance: f64,
    /// Promote without the champion/challenger comparison (first deploys,
    /// demos); the recency gate still applies.
    pub force_promote: bool,
    pub selection: ModelSelection,
}

/// Which candidate becomes the registered version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSelection {
    /// The GBDT unless the logistic baseline scores a higher validation AUC
    /// (small or near-linear data): serve whichever is better.
    Best,
    /// Always the GBDT (the baseline is only reported).
    Gbdt,
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
    Registry(#[from] RegistryError),
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
    pub decision: String,
    pub production_version: Option<u64>,
    pub previous_production_version: Option<u64>,
    pub metrics: ModelMetrics,
    pub baseline_metrics: Evaluation,
    /// The production model's AUC re-measured on this validation set.
    pub previous_production_auc: Option<f64>,
    pub train_cutoffs: Vec<String>,
    pub validation_cutoff: String,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub training_secs: f64,
}

/// The training use case. Only one run at a time per instance.
#[derive(Clone)]
pub struct TrainModel {
    events: Arc<dyn EventStore>,
    features: Arc<dyn FeatureStore>,
    registry: Arc<dyn ModelRegistry>,
    trainer: Arc<dyn ModelTrainer>,
    models: ManageModels,
    spec: Arc<FeatureSpec>,
    options: TrainingOptions,
    running: Arc<Mutex<()>>,
}

struct Fitted {
    gbdt: Arc<dyn Classifier>,
    baseline: Arc<dyn Classifier>,
    gbdt_eval: Evaluation,
    baseline_eval: Evaluation,
    recency_auc: f64,
    secs: f64,
}

impl TrainModel {
    pub fn new(
        events: Arc<dyn EventStore>,
        features: Arc<dyn FeatureStore>,
        registry: Arc<dyn ModelRegistry>,
        trainer: Arc<dyn ModelTrainer>,
        spec: Arc<FeatureSpec>,
        options: TrainingOptions,
    ) -> Self {
        let models = ManageModels::new(registry.clone(), trainer.clone());
        Self {
            events,
            features,
            registry,
            trainer,
            models,
            spec,
            options,
            running: Arc::new(Mutex::new(())),
        }
    }

    /// Uses `models` (e.g. one with an MLflow exporter) for registration
    /// side effects and alias moves.
    pub fn with_models(mut self, models: ManageModels) -> Self {
        self.models = models;
        self
    }

    /// Whether a run is in progress (for 409 answers before queueing).
    pub fn is_busy(&self) -> bool {
        self.running.try_lock().is_err()
    }

    /// Chooses the validation cutoff and the training cutoffs.
    ///
    /// # Errors
    /// [`TrainError::Insufficient`] when the data does not span enough time.
    pub async fn plan_cutoffs(&self) -> Result<(Vec<i64>, i64), TrainError> {
        let stats = self.events.stats().await?;
        let (Some(first), Some(last)) = (stats.first_event_time, stats.last_event_time) else {
            return Err(TrainError::Insufficient(
                "the event store is empty; ingest events first".into(),
            ));
        };
        let h = self.options.policy.horizon_secs();
        let validation = self
            .options
            .validation_cutoff
            .unwrap_or_else(|| floor_day(last) - h);
        if validation + h > last {
            return Err(TrainError::Insufficient(format!(
                "the validation horizon ({} + {} days) runs past the last event ({})",
                format_rfc3339(validation),
                self.options.policy.horizon_days,
                format_rfc3339(last)
            )));
        }
        let step = i64::from(self.options.snapshot_step_days.max(1)) * DAY_SECS;
        let earliest_useful = first + self.options.policy.lookback_secs().min(h);
        let mut train: Vec<i64> = (0..self.options.train_snapshots.max(1))
            .map(|k| validation - h - i64::from(k) * step)
            .filter(|t| *t > earliest_useful)
            .collect();
        train.reverse();
        if train.is_empty() {
            return Err(TrainError::Insufficient(format!(
                "events span {} to {}: training needs history before {} plus two horizons of {} days",
                format_rfc3339(first),
                format_rfc3339(last),
                format_rfc3339(validation - h),
                self.options.policy.horizon_days
            )));
        }
        Ok((train, validation))
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

    async fn run_locked(&self) -> Result<TrainReport, TrainError> {
        let (train_cutoffs, validation_cutoff) = self.plan_cutoffs().await?;
        let policy = self.options.policy;
        let mut train = Dataset::default();
        for &cutoff in &train_cutoffs {
            train.extend(
                self.features
                    .training_set(&self.spec, policy, cutoff)
                    .await?,
            );
        }
        let validation = self
            .features
            .training_set(&self.spec, policy, validation_cutoff)
            .await?;
        check_set("training", &train)?;
        check_set("validation", &validation)?;
        let recency = self.spec.index_of(RECENCY_FEATURE).ok_or_else(|| {
            TrainError::Insufficient(format!("the feature spec lacks {RECENCY_FEATURE}"))
        })?;

        let trainer = self.trainer.clone();
        let validation = Arc::new(validation);
        let val = validation.clone();
        let fitted = tokio::task::spawn_blocking(move || fit(&*trainer, &train, &val, recency))
            .await
            .map_err(|e| TrainError::Join(e.to_string()))??;
        let train_rows = fitted.0;
        let train_rate = fitted.1;
        let fitted = fitted.2;

        let logistic_wins = self.options.selection == ModelSelection::Best
            && fitted.baseline_eval.auc > fitted.gbdt_eval.auc;
        let (kind, chosen, chosen_eval) = if logistic_wins {
            (
                ModelKind::Logistic,
                fitted.baseline.clone(),
                fitted.baseline_eval,
            )
        } else {
            (ModelKind::Gbdt, fitted.gbdt.clone(), fitted.gbdt_eval)
        };
        let selection = format!(
            "selected {} (validation AUC gbdt {:.4}, logistic {:.4})",
            kind.as_str(),
            fitted.gbdt_eval.auc,
            fitted.baseline_eval.auc
        );
        let metrics = ModelMetrics::from_evaluation(chosen_eval, fitted.recency_auc);
        let metadata = ModelMetadata {
            name: self.options.model_name.clone(),
            version: 0,
            kind,
            feature_names: self.spec.names(),
            feature_fingerprint: self.spec.fingerprint(),
            train_cutoffs: train_cutoffs.iter().map(|t| format_rfc3339(*t)).collect(),
            validation_cutoff: format_rfc3339(validation_cutoff),
            horizon_days: policy.horizon_days,
            lookback_days: policy.lookback_days,
            train_rows,
            validation_rows: validation.len(),
            train_churn_rate: train_rate,
            validation_churn_rate: validation.positive_rate(),
            metrics,
            baseline_metrics: Some(fitted.baseline_eval),
            hyperparameters: self.trainer.hyperparameters(kind),
            trained_at: chrono::Utc::now().to_rfc3339(),
            training_secs: fitted.secs,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            checksum_sha256: String::new(),
        };
        let bytes = chosen.to_bytes()?;
        let registered = self.registry.register(metadata, bytes.clone()).await?;
        let version = registered.version;
        let export = self.models.export_version(&registered, &bytes).await;
        self.models
            .move_alias(LATEST, version, "newly registered")
            .await?;

        // Champion/challenger on the same validation rows.
        let champion = self.models.load_production().await;
        let (previous_version, previous_auc) = match champion {
            Ok(Some(champion)) => {
                let auc = if champion.metadata.feature_fingerprint == self.spec.fingerprint() {
                    let c = champion.classifier.clone();
                    let val = validation.clone();
                    tokio::task::spawn_blocking(move || -> Result<f64, TrainError> {
                        let scores = c.predict_proba(&val.rows)?;
                        Ok(roc_auc(&scores, &val.labels)?)
                    })
                    .await
                    .map_err(|e| TrainError::Join(e.to_string()))??
                } else {
                    // Different features: only the recorded figure is comparable.
                    champion.metadata.metrics.auc
                };
                (Some(champion.metadata.version), Some(auc))
            }
            Ok(None) => (None, None),
            Err(e) => {
                // A broken champion must not block a healthy challenger.
                tracing::warn!(error = %e, "current production model cannot be loaded; treating as absent");
                (None, None)
            }
        };
        let tol = self.options.promotion_tolerance;
        let (promote, decision) = if metrics.auc <= metrics.recency_auc {
            (
                false,
                format!(
                    "not promoted: AUC {:.4} does not beat the recency rule's {:.4}",
                    metrics.auc, metrics.recency_auc
                ),
            )
        } else {
            match (previous_version, previous_auc) {
                (None, _) | (_, None) => (true, "promoted: no production model yet".to_string()),
                (Some(v), Some(_)) if self.options.force_promote => {
                    (true, format!("promoted over version {v}: forced"))
                }
                (Some(v), Some(prev)) if metrics.auc >= prev - tol => (
                    true,
                    format!(
                        "promoted: AUC {:.4} vs production v{v}'s {prev:.4} on the same validation set (tolerance {tol})",
                        metrics.auc
                    ),
                ),
                (Some(v), Some(prev)) => (
                    false,
                    format!(
                        "not promoted: AUC {:.4} is worse than production v{v}'s {prev:.4} by more than {tol}",
                        metrics.auc
                    ),
                ),
            }
        };
        if promote {
            self.models.promote(version, &decision).await?;
            metrics::gauge!(names::MODEL_VALIDATION_AUC).set(metrics.auc);
        }
        let production_version = if promote {
            Some(version)
        } else {
            previous_version
        };
        let mut aliases = vec![LATEST.to_string()];
        if promote {
            aliases.push(crate::application::models::PRODUCTION.to_string());
        }
        Ok(TrainReport {
            model_name: self.options.model_name.clone(),
            version,
            model_kind: kind,
            selection,
            gbdt_metrics: fitted.gbdt_eval,
            aliases,
            promoted: promote,
            decision,
            production_version,
            previous_production_version: previous_version,
            metrics,
            baseline_metrics: fitted.baseline_eval,
            previous_production_auc: previous_auc,
            train_cutoffs: registered.train_cutoffs.clone(),
            validation_cutoff: registered.validation_cutoff.clone(),
            train_rows,
            validation_rows: validation.len(),
            training_secs: fitted.secs,
            export,
        })
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

/// Fits both models and evaluates them; returns (train rows, train churn
/// rate, results).
fn fit(
    trainer: &dyn ModelTrainer,
    train: &Dataset,
    validation: &Dataset,
    recency: usize,
) -> Result<(usize, f64, Fitted), TrainError> {
    let started = Instant::now();
    let gbdt = trainer.train(ModelKind::Gbdt, train)?;
    let secs = started.elapsed().as_secs_f64();
    let baseline = trainer.train(ModelKind::Logistic, train)?;
    let gbdt_eval = evaluate(&gbdt.predict_proba(&validation.rows)?, &validation.labels)?;
    let baseline_eval = evaluate(
        &baseline.predict_proba(&validation.rows)?,
        &validation.labels,
    )?;
    // More days since the last event = more likely churned.
    let recency_auc = roc_auc(&validation.column(recency), &validation.labels)?;
    Ok((
        train.len(),
        train.positive_rate(),
        Fitted {
            gbdt,
            baseline,
            gbdt_eval,
            baseline_eval,
            recency_auc,
            secs,
        },
    ))
}
