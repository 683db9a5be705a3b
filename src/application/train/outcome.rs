//! What a training run reports (`churn train --json`, the job result).

use serde::Serialize;

use crate::domain::metrics::Evaluation;
use crate::domain::model::{Dataset, ModelKind, ModelMetrics, ModelReport};
use crate::domain::training::PromotionDecision;

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

/// The rows a run trains and validates on, with where each came from
/// (`churn train --export-sets`).
#[derive(Debug, Clone)]
pub struct TrainingRows {
    /// Stacked in `train_cutoffs` order.
    pub train: Dataset,
    pub train_cutoffs: Vec<i64>,
    /// Rows of `train` per cutoff, aligned with `train_cutoffs`.
    pub rows_per_cutoff: Vec<usize>,
    pub validation: Dataset,
    pub validation_cutoff: i64,
    /// False when the validation set was too small to halve: both halves
    /// are then every validation row.
    pub halved: bool,
}

impl TrainingRows {
    /// The cutoff of each training row, in row order.
    pub fn train_row_cutoffs(&self) -> impl Iterator<Item = i64> + '_ {
        self.train_cutoffs
            .iter()
            .zip(&self.rows_per_cutoff)
            .flat_map(|(c, n)| std::iter::repeat_n(*c, *n))
    }
}
