//! Probability calibration: how far a model's probabilities are from the
//! observed churn rates (the reliability table) and the two classic fixes,
//! Platt scaling (a logistic curve on the model's log-odds) and isotonic
//! regression (a monotone step function, pool-adjacent-violators).
//!
//! Both are a few dozen lines of arithmetic; the crates that have them
//! (linfa, smartcore) would bring a second linear-algebra stack for two
//! parameters, so they are written here and tested against hand-worked
//! values. Training decides whether a fitted calibration is kept
//! ([`keep_calibration`]): only when it lowers log loss on rows used
//! neither for training the model nor for fitting the calibration.

use serde::{Deserialize, Serialize};

use super::math::{logit, sigmoid};

/// Probabilities a calibration may output: never exactly 0 or 1, so a log
/// loss stays finite and a logit exists.
const EDGE: f64 = 1e-6;

/// Which calibration training fits (`training.calibration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    None,
    Platt,
    Isotonic,
}

impl CalibrationMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Platt => "platt",
            Self::Isotonic => "isotonic",
        }
    }
}

/// A fitted map from the model's raw probability to a calibrated one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Calibration {
    /// `p = sigmoid(a · logit(raw) + b)`.
    Platt { a: f64, b: f64 },
    /// Piecewise-linear through `(thresholds[i], values[i])`, flat outside;
    /// both ascending.
    Isotonic {
        thresholds: Vec<f64>,
        values: Vec<f64>,
    },
}

impl Calibration {
    /// The calibrated probability for a raw one.
    pub fn apply(&self, raw: f64) -> f64 {
        let p = match self {
            Self::Platt { a, b } => sigmoid(a * logit(raw) + b),
            Self::Isotonic { thresholds, values } => interpolate(thresholds, values, raw),
        };
        p.clamp(EDGE, 1.0 - EDGE)
    }

    pub fn method(&self) -> CalibrationMethod {
        match self {
            Self::Platt { .. } => CalibrationMethod::Platt,
            Self::Isotonic { .. } => CalibrationMethod::Isotonic,
        }
    }
}

fn interpolate(xs: &[f64], ys: &[f64], x: f64) -> f64 {
    let n = xs.len().min(ys.len());
    if n == 0 {
        return x;
    }
    if x <= xs[0] {
        return ys[0];
    }
    if x >= xs[n - 1] {
        return ys[n - 1];
    }
    // First threshold above x; x lies between it and the one before.
    let hi = xs[..n].partition_point(|t| *t <= x);
    let lo = hi - 1;
    let span = xs[hi] - xs[lo];
    if span <= 0.0 {
        return ys[hi];
    }
    ys[lo] + (ys[hi] - ys[lo]) * (x - xs[lo]) / span
}

/// Fits the chosen calibration on `(raw probability, label)` pairs; `None`
/// for [`CalibrationMethod::None`] or when the rows hold one class only.
pub fn fit(method: CalibrationMethod, raw: &[f64], labels: &[bool]) -> Option<Calibration> {
    let positives = labels.iter().filter(|l| **l).count();
    if raw.len() != labels.len() || positives == 0 || positives == labels.len() {
        return None;
    }
    match method {
        CalibrationMethod::None => None,
        CalibrationMethod::Platt => Some(fit_platt(raw, labels, positives)),
        CalibrationMethod::Isotonic => Some(fit_isotonic(raw, labels)),
    }
}

/// Platt's method on the model's log-odds: Newton–Raphson on the two
/// parameters, with Platt's smoothed targets so a separable set does not
/// drive them to infinity.
fn fit_platt(raw: &[f64], labels: &[bool], positives: usize) -> Calibration {
    let negatives = labels.len() - positives;
    let hi = (positives as f64 + 1.0) / (positives as f64 + 2.0);
    let lo = 1.0 / (negatives as f64 + 2.0);
    let z: Vec<f64> = raw.iter().map(|p| logit(*p)).collect();
    let (mut a, mut b) = (1.0, 0.0);
    for _ in 0..100 {
        // Gradient and Hessian of the negative log-likelihood in (a, b).
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (zi, y) in z.iter().zip(labels) {
            let t = if *y { hi } else { lo };
            let p = sigmoid(a * zi + b);
            let d = p - t;
            let w = (p * (1.0 - p)).max(1e-12);
            ga += d * zi;
            gb += d;
            haa += w * zi * zi;
            hab += w * zi;
            hbb += w;
        }
        // A tiny ridge keeps the system solvable when every z is equal.
        let (haa, hbb) = (haa + 1e-9, hbb + 1e-9);
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    Calibration::Platt { a, b }
}

/// Pool-adjacent-violators on the rows sorted by raw probability: the
/// non-decreasing step function closest (least squares) to the labels. Each
/// pooled block is kept as the mean of its raw scores and of its labels.
fn fit_isotonic(raw: &[f64], labels: &[bool]) -> Calibration {
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&i, &j| raw[i].total_cmp(&raw[j]));
    // Blocks of (sum of x, sum of y, count).
    let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
    for i in order {
        let y = if labels[i] { 1.0 } else { 0.0 };
        let same_x = blocks.last().is_some_and(|&(sx, _, n)| sx / n == raw[i]);
        if same_x && let Some(last) = blocks.last_mut() {
            // Tied scores must map to one value: they join the block.
            last.0 += raw[i];
            last.1 += y;
            last.2 += 1.0;
        } else {
            blocks.push((raw[i], y, 1.0));
        }
        while blocks.len() > 1 {
            let (sx, sy, n) = blocks[blocks.len() - 1];
            let (px, py, pn) = blocks[blocks.len() - 2];
            if py / pn <= sy / n {
                break;
            }
            blocks.pop();
            if let Some(prev) = blocks.last_mut() {
                *prev = (px + sx, py + sy, pn + n);
            }
        }
    }
    Calibration::Isotonic {
        thresholds: blocks.iter().map(|(sx, _, n)| sx / n).collect(),
        values: blocks.iter().map(|(_, sy, n)| sy / n).collect(),
    }
}

/// One bin of the reliability table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Predicted probabilities in `[lower, upper)` (the last bin includes 1).
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Mean predicted probability in the bin (`None` when empty).
    pub mean_predicted: Option<f64>,
    /// Share of the bin's users who churned (`None` when empty).
    pub observed_rate: Option<f64>,
}

/// Bins of the reliability table.
pub const RELIABILITY_BINS: usize = 10;

/// Predicted against observed churn in ten equal-width probability bins:
/// a calibrated model's bins lie on the diagonal.
pub fn reliability(scores: &[f64], labels: &[bool]) -> Vec<ReliabilityBin> {
    let k = RELIABILITY_BINS;
    let mut sums = vec![(0usize, 0.0f64, 0usize); k];
    for (p, y) in scores.iter().zip(labels) {
        if !p.is_finite() {
            continue;
        }
        let bin = ((p.clamp(0.0, 1.0) * k as f64) as usize).min(k - 1);
        sums[bin].0 += 1;
        sums[bin].1 += p;
        sums[bin].2 += usize::from(*y);
    }
    sums.into_iter()
        .enumerate()
        .map(|(i, (count, sum_p, churned))| ReliabilityBin {
            lower: i as f64 / k as f64,
            upper: (i + 1) as f64 / k as f64,
            count,
            mean_predicted: (count > 0).then(|| sum_p / count as f64),
            observed_rate: (count > 0).then(|| churned as f64 / count as f64),
        })
        .collect()
}

/// What training did about calibration, with the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// The configured method.
    pub method: CalibrationMethod,
    /// Whether the fitted calibration is applied when serving.
    pub applied: bool,
    /// Log loss of the raw probabilities on the evaluation rows.
    pub raw_logloss: Option<f64>,
    /// Log loss of the calibrated probabilities on the same rows.
    pub calibrated_logloss: Option<f64>,
    /// Rows the calibration was fitted on (not used to train the model).
    pub fitted_rows: usize,
    /// Rows both figures come from (used for neither).
    pub evaluated_rows: usize,
    /// The decision in words.
    pub decision: String,
}

/// The rule: a calibration is kept only when it strictly lowers log loss on
/// the held-out rows.
pub fn keep_calibration(raw_logloss: f64, calibrated_logloss: f64) -> bool {
    calibrated_logloss.is_finite() && calibrated_logloss < raw_logloss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotonic_pools_violators_and_interpolates() {
        // Sorted scores .1 .2 .3 .4 with labels 0 1 0 1: the middle pair
        // violates order and pools to 0.5.
        let c = fit(
            CalibrationMethod::Isotonic,
            &[0.3, 0.1, 0.4, 0.2],
            &[false, false, true, true],
        )
        .unwrap();
        let Calibration::Isotonic { thresholds, values } = &c else {
            panic!("{c:?}")
        };
        assert_eq!(values, &vec![0.0, 0.5, 1.0]);
        assert!((thresholds[1] - 0.25).abs() < 1e-12);
        // Outside the range: flat, and kept off 0 and 1.
        assert_eq!(c.apply(0.0), EDGE);
        assert_eq!(c.apply(0.9), 1.0 - EDGE);
        // Halfway between .1 (0) and .25 (.5).
        assert!((c.apply(0.175) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn platt_recovers_a_known_distortion() {
        // Labels drawn (deterministically) from sigmoid(2·z − 1) where z is
        // the raw log-odds: Platt should find a ≈ 2, b ≈ −1.
        let mut raw = Vec::new();
        let mut labels = Vec::new();
        let mut state = 7u64;
        for i in 0..20_000 {
            let z = -3.0 + 6.0 * (i as f64 / 20_000.0);
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            raw.push(sigmoid(z));
            labels.push(u < sigmoid(2.0 * z - 1.0));
        }
        let Some(Calibration::Platt { a, b }) = fit(CalibrationMethod::Platt, &raw, &labels) else {
            panic!("no fit")
        };
        assert!((a - 2.0).abs() < 0.1, "a = {a}");
        assert!((b + 1.0).abs() < 0.1, "b = {b}");
    }

    #[test]
    fn one_class_or_none_fits_nothing() {
        assert!(fit(CalibrationMethod::Platt, &[0.1, 0.2], &[true, true]).is_none());
        assert!(fit(CalibrationMethod::None, &[0.1, 0.2], &[true, false]).is_none());
    }

    #[test]
    fn reliability_bins_count_every_finite_score() {
        let t = reliability(
            &[0.05, 0.15, 0.15, 1.0, f64::NAN],
            &[false, true, false, true, true],
        );
        assert_eq!(t.len(), 10);
        assert_eq!(t[0].count, 1);
        assert_eq!(t[1].observed_rate, Some(0.5));
        assert_eq!(t[9].count, 1);
        assert_eq!(t[5].mean_predicted, None);
        assert_eq!(t.iter().map(|b| b.count).sum::<usize>(), 4);
    }

    #[test]
    fn the_rule_keeps_only_improvements() {
        assert!(keep_calibration(0.5, 0.4));
        assert!(!keep_calibration(0.4, 0.4));
        assert!(!keep_calibration(0.4, f64::NAN));
    }
}
