//! The model abstraction: what a trained churn classifier must do, the
//! labelled dataset it learns from, the logistic-regression baseline's
//! (pure) scoring, and the metadata every registered version carries.
//!
//! Training algorithms live in `infrastructure::models` (they wrap external
//! crates); scoring a fitted logistic model is plain arithmetic and lives
//! here so it can be tested without any of them.

use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use super::calibration::{Calibration, CalibrationReport, ReliabilityBin};
use super::curves::Curves;
use super::drift::DriftReference;
use super::math::{sigmoid, splitmix64};
use super::metrics::Evaluation;
use super::snapshot::quantize;

/// The algorithm behind a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Gradient-boosted trees (the main model).
    Gbdt,
    /// Standardised logistic regression (the baseline).
    Logistic,
    /// Both, their log-odds mixed with a weight chosen on held-out rows.
    Blend,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gbdt => "gbdt",
            Self::Logistic => "logistic",
            Self::Blend => "blend",
        }
    }
}

/// The GBDT and the logistic model mixed in log-odds:
/// `logit(p) = w · logit(p_gbdt) + (1 − w) · logit(p_logistic)`. Both
/// explain additively in log-odds (TreeSHAP, coefficient × value), so the
/// blend's contributions are the same mix of theirs and still sum to its
/// log-odds.
#[derive(Debug, Clone)]
pub struct Blend {
    pub gbdt: std::sync::Arc<dyn Classifier>,
    pub logistic: std::sync::Arc<dyn Classifier>,
    /// The GBDT's weight, in `[0, 1]`.
    pub weight: f64,
}

/// How a blend is stored: its weight and both models as they store
/// themselves.
#[derive(Serialize, Deserialize)]
pub struct BlendFile {
    pub weight: f64,
    pub gbdt: Box<serde_json::value::RawValue>,
    pub logistic: Box<serde_json::value::RawValue>,
}

impl Blend {
    /// The mixed log-odds of two probabilities.
    pub fn mix(&self, p_gbdt: f64, p_logistic: f64) -> f64 {
        sigmoid(self.weight * logit(p_gbdt) + (1.0 - self.weight) * logit(p_logistic))
    }
}

/// Log-odds of a probability, clamped away from 0 and 1.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

impl Classifier for Blend {
    fn kind(&self) -> ModelKind {
        ModelKind::Blend
    }

    fn n_features(&self) -> usize {
        self.gbdt.n_features()
    }

    fn predict_proba(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        let g = self.gbdt.predict_proba(rows)?;
        let l = self.logistic.predict_proba(rows)?;
        Ok(g.iter().zip(&l).map(|(g, l)| self.mix(*g, *l)).collect())
    }

    fn contributions(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        let g = self.gbdt.contributions(rows)?;
        let l = self.logistic.contributions(rows)?;
        Ok(g.iter()
            .zip(&l)
            .map(|(g, l)| self.weight * g + (1.0 - self.weight) * l)
            .collect())
    }

    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let codec = |e: serde_json::Error| ModelError::Codec(e.to_string());
        let raw = |bytes: Vec<u8>| -> Result<Box<serde_json::value::RawValue>, ModelError> {
            let text = String::from_utf8(bytes).map_err(|e| ModelError::Codec(e.to_string()))?;
            serde_json::value::RawValue::from_string(text).map_err(codec)
        };
        serde_json::to_vec(&BlendFile {
            weight: self.weight,
            gbdt: raw(self.gbdt.to_bytes()?)?,
            logistic: raw(self.logistic.to_bytes()?)?,
        })
        .map_err(codec)
    }
}

/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model expects {expected} features, got {got}")]
    FeatureCount { expected: usize, got: usize },
    #[error("could not encode or decode the model: {0}")]
    Codec(String),
    #[error("training failed: {0}")]
    Training(String),
}

/// A fitted classifier that outputs churn probabilities in `[0, 1]`.
pub trait Classifier: Send + Sync + Debug {
    fn kind(&self) -> ModelKind;
    fn n_features(&self) -> usize;
    /// Probabilities for row-major `rows` of `n_features()` columns each.
    ///
    /// # Errors
    /// [`ModelError::FeatureCount`] when `rows` is not a whole number of rows.
    fn predict_proba(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError>;
    /// Additive log-odds contributions for row-major `rows`: per row, one
    /// value per feature and then the bias, summing to the row's
    /// `logit(probability)`.
    ///
    /// # Errors
    /// [`ModelError::FeatureCount`] when `rows` is not a whole number of rows.
    fn contributions(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError>;
    /// The serialized form stored in the registry.
    ///
    /// # Errors
    /// [`ModelError::Codec`] if serialization fails.
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError>;
}

/// Checks that `rows` holds whole rows of `n` features; returns the row count.
///
/// # Errors
/// [`ModelError::FeatureCount`] otherwise.
pub fn row_count(rows: &[f64], n: usize) -> Result<usize, ModelError> {
    if n == 0 || !rows.len().is_multiple_of(n) {
        return Err(ModelError::FeatureCount {
            expected: n,
            got: rows.len(),
        });
    }
    Ok(rows.len() / n)
}

/// A labelled, row-major feature matrix (label `true` = churned).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub feature_names: Vec<String>,
    pub user_ids: Vec<u64>,
    pub rows: Vec<f64>,
    pub labels: Vec<bool>,
}

impl Dataset {
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f64] {
        let n = self.n_features();
        &self.rows[i * n..(i + 1) * n]
    }
    pub fn positive_rate(&self) -> f64 {
        if self.labels.is_empty() {
            return 0.0;
        }
        self.labels.iter().filter(|l| **l).count() as f64 / self.labels.len() as f64
    }
    /// Appends another dataset with the same columns (used to stack
    /// several training cutoffs).
    pub fn extend(&mut self, other: Dataset) {
        if self.feature_names.is_empty() {
            self.feature_names = other.feature_names;
        }
        self.user_ids.extend(other.user_ids);
        self.rows.extend(other.rows);
        self.labels.extend(other.labels);
    }
    /// An empty dataset with these columns.
    pub fn with_columns(feature_names: Vec<String>) -> Self {
        Self {
            feature_names,
            ..Self::default()
        }
    }
    /// Appends one labelled row, rounded as serving snapshots store values
    /// ([`quantize`]) so the model learns on exactly the numbers it will be
    /// served. `false` (nothing appended) for a row of the wrong width.
    pub fn push(&mut self, user_id: u64, values: &[f64], churned: bool) -> bool {
        if values.len() != self.n_features() {
            return false;
        }
        self.user_ids.push(user_id);
        self.rows.extend(values.iter().map(|v| quantize(*v)));
        self.labels.push(churned);
        true
    }
    /// Splits the rows in two halves by [`in_report_half`]: stable for a
    /// user across runs and cutoffs, independent of the row order. The
    /// first half chooses, the second reports.
    pub fn split_by_user(&self) -> (Dataset, Dataset) {
        let mut a = Dataset::with_columns(self.feature_names.clone());
        let mut b = Dataset::with_columns(self.feature_names.clone());
        for i in 0..self.len() {
            let user = self.user_ids[i];
            let half = if in_report_half(user) { &mut b } else { &mut a };
            half.user_ids.push(user);
            half.rows.extend_from_slice(self.row(i));
            half.labels.push(self.labels[i]);
        }
        (a, b)
    }
    /// One column, e.g. the recency feature for the recency baseline.
    pub fn column(&self, j: usize) -> Vec<f64> {
        (0..self.len()).map(|i| self.row(i)[j]).collect()
    }
}

/// Whether a validation row of this user is in the half whose figures
/// are reported (`splitmix64(user) & 1 == 1`); the other half chooses
/// the candidate.
pub fn in_report_half(user_id: u64) -> bool {
    splitmix64(user_id) & 1 == 1
}

/// A fitted logistic regression on standardised inputs:
/// `p = sigmoid(intercept + Σ coef_j * (f_j(x_j) - mean_j) / scale_j)`,
/// where `f_j` is `ln(1 + x)` for the columns marked in `log1p` (counts,
/// amounts, durations: heavy-tailed and non-negative) and the identity
/// otherwise; means and scales are of the transformed values. Inputs are
/// first held inside the range each column had in training: a line fitted
/// on tenures of 200–360 days says nothing about 450, and extrapolating it
/// is how a cohort log's logistic candidate fell to 0.73 AUC (trees hold
/// their edge value by construction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticModel {
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    /// Per column: transform with `ln(1 + x)` first. Empty = none (models
    /// registered before the transform existed).
    #[serde(default)]
    pub log1p: Vec<bool>,
    /// Per column: the smallest and largest training value. Empty = no
    /// bounds (models registered before them).
    #[serde(default)]
    pub bounds: Vec<(f64, f64)>,
}

impl LogisticModel {
    /// The input as the coefficients see it (before standardising).
    pub fn transform(&self, j: usize, x: f64) -> f64 {
        let x = match self.bounds.get(j) {
            Some(&(lo, hi)) if lo <= hi => x.clamp(lo, hi),
            _ => x,
        };
        if self.log1p.get(j).copied().unwrap_or(false) {
            // Training saw only non-negative values here; clamp a stray
            // negative instead of producing NaN.
            x.max(0.0).ln_1p()
        } else {
            x
        }
    }
}

impl Classifier for LogisticModel {
    fn kind(&self) -> ModelKind {
        ModelKind::Logistic
    }
    fn n_features(&self) -> usize {
        self.coefficients.len()
    }
    fn predict_proba(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        let n = self.n_features();
        row_count(rows, n)?;
        Ok(rows
            .chunks_exact(n)
            .map(|row| {
                let z = row
                    .iter()
                    .enumerate()
                    .zip(&self.coefficients)
                    .zip(self.means.iter().zip(&self.scales))
                    .map(|(((j, x), c), (m, s))| c * (self.transform(j, *x) - m) / s)
                    .sum::<f64>();
                sigmoid(self.intercept + z)
            })
            .collect())
    }
    fn contributions(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        let n = self.n_features();
        let count = row_count(rows, n)?;
        let mut out = Vec::with_capacity(count * (n + 1));
        for row in rows.chunks_exact(n) {
            out.extend(row.iter().enumerate().map(|(j, x)| {
                self.coefficients[j] * (self.transform(j, *x) - self.means[j]) / self.scales[j]
            }));
            out.push(self.intercept);
        }
        Ok(out)
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        serde_json::to_vec(self).map_err(|e| ModelError::Codec(e.to_string()))
    }
}

/// Validation metrics of a registered model, plus the recency-only rule's
/// AUC on the same set (the bar a model must clear).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub auc: f64,
    pub pr_auc: f64,
    pub logloss: f64,
    pub brier: f64,
    pub recency_auc: f64,
}

impl ModelMetrics {
    pub fn from_evaluation(e: Evaluation, recency_auc: f64) -> Self {
        Self {
            auc: e.auc,
            pr_auc: e.pr_auc,
            logloss: e.logloss,
            brier: e.brier,
            recency_auc,
        }
    }
}

/// Everything recorded next to a model version in the registry
/// (`metadata.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub version: u64,
    pub kind: ModelKind,
    pub feature_names: Vec<String>,
    pub feature_fingerprint: String,
    /// Training cutoffs (RFC 3339), oldest first.
    pub train_cutoffs: Vec<String>,
    pub validation_cutoff: String,
    pub horizon_days: u32,
    pub lookback_days: u32,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub train_churn_rate: f64,
    pub validation_churn_rate: f64,
    pub metrics: ModelMetrics,
    /// The logistic baseline's metrics on the same validation set.
    pub baseline_metrics: Option<Evaluation>,
    pub hyperparameters: serde_json::Value,
    pub trained_at: String,
    pub training_secs: f64,
    pub crate_version: String,
    /// SHA-256 of the model file, verified on every load.
    pub checksum_sha256: String,
    /// Mean |contribution| per feature on the report rows, normalised to
    /// sum to 1, largest first (empty for models registered before).
    #[serde(default)]
    pub feature_importance: Vec<FeatureImportance>,
    /// Applied to the raw probability when serving (absent: none kept).
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// Reliability, calibration decision and curves on the report rows.
    #[serde(default)]
    pub report: ModelReport,
    /// What drift is measured against (absent for models registered before).
    #[serde(default)]
    pub drift_reference: Option<DriftReference>,
    /// The schedule tick and lease term that trained this version (absent
    /// for runs started by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<crate::domain::lease::ScheduledRun>,
}

impl ModelMetadata {
    /// The served probability for a raw one: calibrated when a
    /// calibration was kept, else unchanged.
    pub fn served_probability(&self, raw: f64) -> f64 {
        match &self.calibration {
            Some(c) => c.apply(raw),
            None => raw,
        }
    }
}

/// The evaluation figures recorded with a version, all on the report half
/// of the validation rows (used neither to fit nor to choose the model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Ten-bin reliability table of the raw probabilities.
    #[serde(default)]
    pub reliability: Vec<ReliabilityBin>,
    /// The same for the calibrated probabilities, when calibration is kept.
    #[serde(default)]
    pub calibrated_reliability: Option<Vec<ReliabilityBin>>,
    #[serde(default)]
    pub calibration: Option<CalibrationReport>,
    /// ROC, precision–recall and lift of the raw scores.
    #[serde(default)]
    pub curves: Curves,
}

/// One feature's share of the model's decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureImportance {
    pub feature: String,
    pub importance: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_scoring_is_standardised_and_bounded() {
        let m = LogisticModel {
            coefficients: vec![2.0, -1.0],
            intercept: 0.5,
            means: vec![1.0, 0.0],
            scales: vec![2.0, 1.0],
            log1p: Vec::new(),
            bounds: Vec::new(),
        };
        let p = m.predict_proba(&[1.0, 0.0, 5.0, 1.0, -1e9, 0.0]).unwrap();
        assert!((p[0] - sigmoid(0.5)).abs() < 1e-12);
        assert!((p[1] - sigmoid(0.5 + 4.0 - 1.0)).abs() < 1e-12);
        assert!(p[2] >= 0.0 && p[2] < 1e-6);
        assert!(m.predict_proba(&[1.0, 2.0, 3.0]).is_err());
        // With the log transform on column 0: ln(1 + e - 1) = 1.
        let logged = LogisticModel {
            log1p: vec![true, false],
            ..m.clone()
        };
        let e1 = std::f64::consts::E - 1.0;
        let p = logged.predict_proba(&[e1, 0.0]).unwrap();
        assert!((p[0] - sigmoid(0.5 + 2.0 * (1.0 - 1.0) / 2.0)).abs() < 1e-12);
        // Held inside the training range: beyond it, the edge value.
        let bounded = LogisticModel {
            bounds: vec![(0.0, 3.0), (-1.0, 1.0)],
            ..m.clone()
        };
        let p = bounded.predict_proba(&[50.0, -7.0, 3.0, -1.0]).unwrap();
        assert_eq!(p[0], p[1]);
        assert!((p[0] - sigmoid(0.5 + 2.0 * (3.0 - 1.0) / 2.0 + 1.0)).abs() < 1e-12);
        let c = bounded.contributions(&[50.0, 0.5]).unwrap();
        assert!((c[0] - 2.0).abs() < 1e-12, "{c:?}");
        // A model stored before bounds reads as unbounded.
        let old: LogisticModel = serde_json::from_str(
            r#"{"coefficients":[1.0],"intercept":0.0,"means":[0.0],"scales":[1.0]}"#,
        )
        .unwrap();
        assert!(old.bounds.is_empty() && old.log1p.is_empty());
    }

    #[test]
    fn dataset_rows_and_columns() {
        let mut d = Dataset {
            feature_names: vec!["a".into(), "b".into()],
            user_ids: vec![1],
            rows: vec![1.0, 2.0],
            labels: vec![true],
        };
        d.extend(Dataset {
            feature_names: vec!["a".into(), "b".into()],
            user_ids: vec![2],
            rows: vec![3.0, 4.0],
            labels: vec![false],
        });
        assert_eq!(d.row(1), &[3.0, 4.0]);
        assert_eq!(d.column(1), vec![2.0, 4.0]);
        assert_eq!(d.positive_rate(), 0.5);
    }
}
