//! Drift and data quality: how far the serving snapshot has moved from the
//! data a model was trained on.
//!
//! Training stores a [`DriftReference`] with the model: per feature, bin
//! edges at the deciles of the reference snapshot (every user's features at
//! training time, as of the time serving's rebuilds use, computed exactly
//! as serving computes them) and the share of users in each bin; the same for the model's raw
//! score; and a hash sample of the reference users. Serving bins the current
//! snapshot on those edges and reports the population stability index
//! (PSI = Σ (a − e) · ln(a / e)) per feature and of the scores, the share of
//! users new since training and the share of values that are not finite.
//! The usual reading: below 0.1 stable, 0.1–0.25 moderate, above 0.25 a
//! shift worth a look (the alert thresholds are configurable).

use serde::{Deserialize, Serialize};

use super::math::splitmix64;

/// Quantile bins per feature (deciles).
pub const DRIFT_BINS: usize = 10;
/// Rows of a snapshot drift statistics are computed on (a stride sample
/// beyond it): the sampling noise of a 10-bin PSI is about bins / rows,
/// 0.0002 here, far below any alert threshold.
pub const DRIFT_SAMPLE_ROWS: usize = 50_000;
/// Users kept in the hash sample that estimates the share of new users.
const MAX_SAMPLED_USERS: usize = 2_048;
/// Floor for an empty bin's share: PSI's log needs both shares positive.
const MIN_SHARE: f64 = 1e-4;

/// The reference distribution of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Inner cut points, ascending and distinct: value `v` falls in the
    /// first bin whose edge is `>= v`, or the last bin above every edge.
    pub edges: Vec<f64>,
    /// Share of rows per bin (`edges.len() + 1` bins), then the share of
    /// non-finite values.
    pub shares: Vec<f64>,
}

impl Histogram {
    /// Edges at the deciles of `values` (non-finite values aside), with
    /// their shares.
    pub fn from_values(values: &[f64]) -> Self {
        let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        finite.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = Vec::with_capacity(DRIFT_BINS - 1);
        if !finite.is_empty() {
            for k in 1..DRIFT_BINS {
                let q = finite[(k * finite.len() / DRIFT_BINS).min(finite.len() - 1)];
                // Heavy ties (e.g. most users at 0) merge bins.
                if edges.last().is_none_or(|e| *e < q) {
                    edges.push(q);
                }
            }
            // The top edge would leave the last bin empty by construction.
            if edges.last() == finite.last() {
                edges.pop();
            }
        }
        let mut h = Self {
            edges,
            shares: Vec::new(),
        };
        h.shares = h.shares_of(values);
        h
    }

    /// The bin of one value (the last index for a non-finite one).
    pub fn bin(&self, v: f64) -> usize {
        if v.is_finite() {
            self.edges.partition_point(|e| *e < v)
        } else {
            self.edges.len() + 1
        }
    }

    /// Shares of `values` in this histogram's bins.
    pub fn shares_of(&self, values: &[f64]) -> Vec<f64> {
        let mut counts = vec![0usize; self.edges.len() + 2];
        for v in values {
            counts[self.bin(*v)] += 1;
        }
        let n = values.len().max(1) as f64;
        counts.into_iter().map(|c| c as f64 / n).collect()
    }

    /// PSI of `values` against this reference.
    pub fn psi(&self, values: &[f64]) -> f64 {
        psi(&self.shares, &self.shares_of(values))
    }
}

/// Population stability index of `actual` shares against `expected` ones
/// (same bins); empty bins count as [`MIN_SHARE`].
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .filter(|(e, a)| **e > 0.0 || **a > 0.0)
        .map(|(e, a)| {
            let (e, a) = (e.max(MIN_SHARE), a.max(MIN_SHARE));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// A deterministic sample of user ids: the users whose hash falls in one
/// residue class. The same rule picks the same users on both sides, so the
/// share of sampled serving users missing from the sampled reference
/// estimates the share of new users without storing every id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSample {
    /// A user is sampled when `splitmix64(id) % modulus == 0`.
    pub modulus: u64,
    /// The sampled reference users, ascending.
    pub users: Vec<u64>,
}

impl UserSample {
    pub fn from_users(users: impl Iterator<Item = u64> + Clone) -> Self {
        let count = users.clone().count();
        let mut modulus = 1u64;
        while count as u64 / modulus > MAX_SAMPLED_USERS as u64 {
            modulus *= 2;
        }
        let mut sampled: Vec<u64> = users.filter(|u| Self::picks(modulus, *u)).collect();
        sampled.sort_unstable();
        sampled.truncate(MAX_SAMPLED_USERS * 2);
        Self {
            modulus,
            users: sampled,
        }
    }

    fn picks(modulus: u64, user: u64) -> bool {
        splitmix64(user).is_multiple_of(modulus.max(1))
    }

    /// Share of the sampled `users` not in the reference sample; `None`
    /// when none of them is sampled.
    pub fn new_share(&self, users: impl Iterator<Item = u64>) -> Option<f64> {
        let (mut sampled, mut new) = (0usize, 0usize);
        for u in users.filter(|u| Self::picks(self.modulus, *u)) {
            sampled += 1;
            if self.users.binary_search(&u).is_err() {
                new += 1;
            }
        }
        (sampled > 0).then(|| new as f64 / sampled as f64)
    }
}

/// Everything drift is measured against, stored with a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// The reference snapshot's as-of time (RFC 3339).
    pub as_of: String,
    pub users: usize,
    /// One histogram per model feature, in the model's feature order.
    pub features: Vec<Histogram>,
    /// The model's raw probability over the reference users.
    pub score: Histogram,
    pub user_sample: UserSample,
}

impl DriftReference {
    /// Builds the reference from row-major `rows` of `n` features (a
    /// sample of the reference snapshot), the model's raw scores for those
    /// rows and every user of the snapshot.
    pub fn build(as_of: String, users: &[u64], rows: &[f64], n: usize, scores: &[f64]) -> Self {
        let count = rows.len().checked_div(n).unwrap_or(0);
        let features = (0..n)
            .map(|j| {
                let column: Vec<f64> = (0..count).map(|i| rows[i * n + j]).collect();
                Histogram::from_values(&column)
            })
            .collect();
        Self {
            as_of,
            users: users.len(),
            features,
            score: Histogram::from_values(scores),
            user_sample: UserSample::from_users(users.iter().copied()),
        }
    }
}

/// When to raise the drift alert (`[monitoring]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DriftThresholds {
    pub feature_psi: f64,
    pub prediction_psi: f64,
    pub new_user_share: f64,
}

impl Default for DriftThresholds {
    /// The conventional reading of PSI: above 0.25 is a shift.
    fn default() -> Self {
        Self {
            feature_psi: 0.25,
            prediction_psi: 0.25,
            new_user_share: 0.5,
        }
    }
}

/// One feature's drift.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FeatureDrift {
    pub feature: String,
    pub psi: f64,
    /// Share of serving values that are NaN or infinite (reference: 0).
    pub non_finite_share: f64,
    pub alert: bool,
}

/// The serving snapshot measured against the production model's reference.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DriftReport {
    pub model_version: u64,
    pub reference_as_of: String,
    pub reference_users: usize,
    pub features_as_of: String,
    pub users: usize,
    /// Largest PSI first.
    pub features: Vec<FeatureDrift>,
    pub prediction_psi: f64,
    /// Share of serving users absent from the reference (hash-sampled
    /// estimate; `None` when no serving user fell in the sample).
    pub new_user_share: Option<f64>,
    /// Whether any threshold is crossed.
    pub alert: bool,
    /// Each crossed threshold in words.
    pub alerts: Vec<String>,
    #[schema(value_type = Object)]
    pub thresholds: DriftThresholds,
}

/// The inputs of one drift measurement: the model's feature names, a
/// sample of the serving rows (row-major), every serving user and the
/// model's raw scores for them.
pub struct ServingSample<'a> {
    pub names: &'a [String],
    pub rows: &'a [f64],
    pub users: &'a [u64],
    pub scores: &'a [f64],
}

/// Measures `serving` against `reference`.
pub fn measure(
    reference: &DriftReference,
    serving: &ServingSample<'_>,
    thresholds: DriftThresholds,
    model_version: u64,
    features_as_of: String,
) -> DriftReport {
    let n = serving.names.len();
    let count = serving.rows.len().checked_div(n).unwrap_or(0);
    let mut features: Vec<FeatureDrift> = serving
        .names
        .iter()
        .zip(&reference.features)
        .enumerate()
        .map(|(j, (name, hist))| {
            let column: Vec<f64> = (0..count).map(|i| serving.rows[i * n + j]).collect();
            let shares = hist.shares_of(&column);
            let psi = psi(&hist.shares, &shares);
            FeatureDrift {
                feature: name.clone(),
                psi,
                non_finite_share: shares.last().copied().unwrap_or(0.0),
                alert: psi > thresholds.feature_psi,
            }
        })
        .collect();
    features.sort_by(|a, b| b.psi.total_cmp(&a.psi).then(a.feature.cmp(&b.feature)));
    let prediction_psi = reference.score.psi(serving.scores);
    let new_user_share = reference
        .user_sample
        .new_share(serving.users.iter().copied());
    let mut alerts = Vec::new();
    let drifted: Vec<&str> = features
        .iter()
        .filter(|f| f.alert)
        .map(|f| f.feature.as_str())
        .collect();
    if !drifted.is_empty() {
        alerts.push(format!(
            "{} feature(s) with PSI above {}: {}",
            drifted.len(),
            thresholds.feature_psi,
            drifted.join(", ")
        ));
    }
    if prediction_psi > thresholds.prediction_psi {
        alerts.push(format!(
            "prediction PSI {prediction_psi:.3} above {}",
            thresholds.prediction_psi
        ));
    }
    if let Some(s) = new_user_share
        && s > thresholds.new_user_share
    {
        alerts.push(format!(
            "{:.1}% of users are new since training (above {:.1}%)",
            100.0 * s,
            100.0 * thresholds.new_user_share
        ));
    }
    DriftReport {
        model_version,
        reference_as_of: reference.as_of.clone(),
        reference_users: reference.users,
        features_as_of,
        users: serving.users.len(),
        features,
        prediction_psi,
        new_user_share,
        alert: !alerts.is_empty(),
        alerts,
        thresholds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, shift: f64) -> Vec<f64> {
        (0..n).map(|i| (i % 1000) as f64 + shift).collect()
    }

    #[test]
    fn the_same_distribution_has_no_drift_and_a_shift_has_much() {
        let h = Histogram::from_values(&values(10_000, 0.0));
        assert_eq!(h.shares.len(), h.edges.len() + 2);
        assert!((h.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(h.psi(&values(5_000, 0.0)) < 1e-3);
        assert!(h.psi(&values(5_000, 500.0)) > 1.0);
        // NaNs land in their own bin and count as drift.
        let mut with_nan = values(1_000, 0.0);
        with_nan[..300].fill(f64::NAN);
        assert!(h.psi(&with_nan) > 0.25);
    }

    #[test]
    fn ties_merge_bins() {
        let mut v = vec![0.0; 900];
        v.extend((0..100).map(f64::from));
        let h = Histogram::from_values(&v);
        assert_eq!(h.edges, vec![0.0]);
        assert!((h.shares[0] - 0.901).abs() < 1e-9);
        assert!(h.psi(&v) < 1e-12);
        // A constant column has no edges and one bin.
        let c = Histogram::from_values(&[3.0; 10]);
        assert!(c.edges.is_empty());
        assert_eq!(c.shares, vec![1.0, 0.0]);
    }

    #[test]
    fn the_user_sample_estimates_the_share_of_new_users() {
        let reference = UserSample::from_users(0..100_000u64);
        assert!(reference.users.len() <= 2 * MAX_SAMPLED_USERS);
        assert!(reference.modulus > 1);
        assert_eq!(reference.new_share(0..100_000u64), Some(0.0));
        // Half the serving users are new.
        let share = reference.new_share(50_000..150_000u64).unwrap();
        assert!((share - 0.5).abs() < 0.05, "{share}");
        let small = UserSample::from_users([5u64, 9].into_iter());
        assert_eq!(small.modulus, 1);
        assert_eq!(small.new_share([5u64, 6].into_iter()), Some(0.5));
    }

    #[test]
    fn measure_flags_the_shifted_feature_only() {
        let n = 2;
        let rows: Vec<f64> = (0..2_000)
            .flat_map(|i| [f64::from(i % 100), f64::from(i % 7)])
            .collect();
        let users: Vec<u64> = (0..2_000).collect();
        let scores: Vec<f64> = (0..2_000).map(|i| f64::from(i % 10) / 10.0).collect();
        let reference = DriftReference::build("t".into(), &users, &rows, n, &scores);
        let shifted: Vec<f64> = rows
            .chunks(2)
            .flat_map(|r| [r[0] + 1_000.0, r[1]])
            .collect();
        let names = vec!["a".to_string(), "b".to_string()];
        let thresholds = DriftThresholds {
            feature_psi: 0.25,
            prediction_psi: 0.25,
            new_user_share: 0.5,
        };
        let sample = ServingSample {
            names: &names,
            rows: &shifted,
            users: &users,
            scores: &scores,
        };
        let report = measure(&reference, &sample, thresholds, 1, "t".into());
        assert_eq!(report.features[0].feature, "a");
        assert!(report.features[0].alert);
        assert!(report.features[1].psi < 1e-9 && !report.features[1].alert);
        assert!(report.prediction_psi < 1e-9);
        assert_eq!(report.new_user_share, Some(0.0));
        assert!(
            report.alert && report.alerts.len() == 1,
            "{:?}",
            report.alerts
        );
    }
}
