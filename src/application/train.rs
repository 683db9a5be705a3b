//! `TrainModel`: the train → evaluate → register → gate step.
//!
//! 1. Picks cutoffs from the data: the validation cutoff T2 is the last full
//!    day minus the horizon (so its labels are fully observed); training
//!    cutoffs are T1 = T2 − H and `train_snapshots − 1` earlier ones, a step
//!    apart. Training labels end at T2, so no validation label is ever seen.
//! 2. Builds point-in-time training sets through the feature store.
//! 3. Fits the GBDT and the logistic baseline off the async runtime.
//! 4. Evaluates both, plus the recency-only rule, on the T2 set.
//! 5. Registers the chosen candidate through [`ManageModels`] (which also
//!    exports it and moves `latest`).
//! 6. Champion/challenger: the current production model is re-scored on the
//!    same T2 set and [`decide_promotion`] (pure, in the domain) says
//!    whether `production` moves.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::application::models::{LATEST, ManageModels, ModelsError, PRODUCTION};
use crate::application::ports::{EventStore, FeatureStore, ModelTrainer, StoreError};
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::metrics::{Evaluation, MetricError, evaluate, roc_auc};
use crate::domain::model::{
    Classifier, Dataset, ModelError, ModelKind, ModelMetadata, ModelMetrics,
};
use crate::domain::time::{DAY_SECS, floor_day, format_rfc3339};
use crate::domain::training::{
    Champion, ModelSelection, PromotionDecision, PromotionPolicy, decide_promotion,
};
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
    pub promotion: PromotionPolicy,
    pub selection: ModelSelection,
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
    pub validation_rows: usize,
    pub training_secs: f64,
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

/// Both fitted candidates and their validation figures.
struct Fitted {
    gbdt: Arc<dyn Classifier>,
    baseline: Arc<dyn Classifier>,
    gbdt_eval: Evaluation,
    baseline_eval: Evaluation,
    recency_auc: f64,
    train_rows: usize,
    train_churn_rate: f64,
    secs: f64,
}

/// The candidate that becomes the registered version.
struct Chosen {
    kind: ModelKind,
    classifier: Arc<dyn Classifier>,
    metrics: ModelMetrics,
    selection: String,
}

/// Point-in-time training and validation rows of one run.
struct Sets {
    train_cutoffs: Vec<i64>,
    validation_cutoff: i64,
    train: Arc<Dataset>,
    validation: Arc<Dataset>,
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
        let sets = self.build_sets().await?;
        let fitted = self.fit(&sets).await?;
        let chosen = self.choose(&fitted);
        let metadata = self.metadata(&sets, &fitted, &chosen);
        let bytes = chosen.classifier.to_bytes()?;
        let (registered, export) = self.models.register(metadata, bytes).await?;
        let version = registered.version;

        let champion = self.champion(&sets.validation).await?;
        let decision = decide_promotion(
            chosen.metrics.auc,
            chosen.metrics.recency_auc,
            champion,
            self.options.promotion,
        );
        let promoted = decision.promotes();
        if promoted {
            self.models.promote(version, &decision.to_string()).await?;
            metrics::gauge!(names::MODEL_VALIDATION_AUC).set(chosen.metrics.auc);
        }
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
            gbdt_metrics: fitted.gbdt_eval,
            aliases,
            promoted,
            decision: decision.to_string(),
            promotion: decision,
            production_version: if promoted { Some(version) } else { previous },
            previous_production_version: previous,
            metrics: chosen.metrics,
            baseline_metrics: fitted.baseline_eval,
            previous_production_auc: champion.map(|c| c.auc),
            train_cutoffs: registered.train_cutoffs.clone(),
            validation_cutoff: registered.validation_cutoff.clone(),
            train_rows: fitted.train_rows,
            validation_rows: sets.validation.len(),
            training_secs: fitted.secs,
            export,
        })
    }

    /// The stacked training set and the validation set, both point in time.
    async fn build_sets(&self) -> Result<Sets, TrainError> {
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
        Ok(Sets {
            train_cutoffs,
            validation_cutoff,
            train: Arc::new(train),
            validation: Arc::new(validation),
        })
    }

    /// Fits both candidates off the async runtime.
    async fn fit(&self, sets: &Sets) -> Result<Fitted, TrainError> {
        let recency = self.spec.index_of(RECENCY_FEATURE).ok_or_else(|| {
            TrainError::Insufficient(format!("the feature spec lacks {RECENCY_FEATURE}"))
        })?;
        let trainer = self.trainer.clone();
        let train = sets.train.clone();
        let validation = sets.validation.clone();
        tokio::task::spawn_blocking(move || fit(&*trainer, &train, &validation, recency))
            .await
            .map_err(|e| TrainError::Join(e.to_string()))?
    }

    fn choose(&self, fitted: &Fitted) -> Chosen {
        let logistic_wins = self.options.selection == ModelSelection::Best
            && fitted.baseline_eval.auc > fitted.gbdt_eval.auc;
        let (kind, classifier, eval) = if logistic_wins {
            (
                ModelKind::Logistic,
                fitted.baseline.clone(),
                fitted.baseline_eval,
            )
        } else {
            (ModelKind::Gbdt, fitted.gbdt.clone(), fitted.gbdt_eval)
        };
        Chosen {
            kind,
            classifier,
            metrics: ModelMetrics::from_evaluation(eval, fitted.recency_auc),
            selection: format!(
                "selected {} (validation AUC gbdt {:.4}, logistic {:.4})",
                kind.as_str(),
                fitted.gbdt_eval.auc,
                fitted.baseline_eval.auc
            ),
        }
    }

    fn metadata(&self, sets: &Sets, fitted: &Fitted, chosen: &Chosen) -> ModelMetadata {
        let policy = self.options.policy;
        ModelMetadata {
            name: self.options.model_name.clone(),
            version: 0,
            kind: chosen.kind,
            feature_names: self.spec.names(),
            feature_fingerprint: self.spec.fingerprint(),
            train_cutoffs: sets
                .train_cutoffs
                .iter()
                .map(|t| format_rfc3339(*t))
                .collect(),
            validation_cutoff: format_rfc3339(sets.validation_cutoff),
            horizon_days: policy.horizon_days,
            lookback_days: policy.lookback_days,
            train_rows: fitted.train_rows,
            validation_rows: sets.validation.len(),
            train_churn_rate: fitted.train_churn_rate,
            validation_churn_rate: sets.validation.positive_rate(),
            metrics: chosen.metrics,
            baseline_metrics: Some(fitted.baseline_eval),
            hyperparameters: self.trainer.hyperparameters(chosen.kind),
            trained_at: chrono::Utc::now().to_rfc3339(),
            training_secs: fitted.secs,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            checksum_sha256: String::new(),
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
            // Different features: only the recorded figure is comparable.
            return Ok(Some(Champion {
                version,
                auc: champion.metadata.metrics.auc,
            }));
        }
        let classifier = champion.classifier.clone();
        let val = validation.clone();
        let auc = tokio::task::spawn_blocking(move || -> Result<f64, TrainError> {
            let scores = classifier.predict_proba(&val.rows)?;
            Ok(roc_auc(&scores, &val.labels)?)
        })
        .await
        .map_err(|e| TrainError::Join(e.to_string()))??;
        Ok(Some(Champion { version, auc }))
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

/// Fits both models and evaluates them, plus the recency rule, on the
/// validation rows.
fn fit(
    trainer: &dyn ModelTrainer,
    train: &Dataset,
    validation: &Dataset,
    recency: usize,
) -> Result<Fitted, TrainError> {
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
    Ok(Fitted {
        gbdt,
        baseline,
        gbdt_eval,
        baseline_eval,
        recency_auc,
        train_rows: train.len(),
        train_churn_rate: train.positive_rate(),
        secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::generate::{GeneratorOptions, generate};
    use crate::application::ports::ModelRegistry;
    use crate::testing::{GradientTrainer, MemoryRegistry, MemoryStore};

    async fn setup() -> (TrainModel, MemoryRegistry, ManageModels) {
        let store = MemoryStore::new(3);
        let mut events = Vec::new();
        generate(
            GeneratorOptions {
                users: 300,
                days: 120,
                end: 1_780_000_000,
                seed: 3,
                churn_share: 0.35,
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
                policy: LabelPolicy {
                    horizon_days: 30,
                    lookback_days: 30,
                },
                validation_cutoff: None,
                train_snapshots: 2,
                snapshot_step_days: 7,
                promotion: PromotionPolicy {
                    tolerance: 0.01,
                    force: false,
                },
                selection: ModelSelection::Best,
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
        assert!((second.previous_production_auc.unwrap() - first.metrics.auc).abs() < 1e-9);
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
}
