//! Per-prediction explanations: each feature's additive contribution to
//! the model's log-odds, so that `base_value` plus the sum of every
//! contribution is exactly `logit(probability)`. The model supplies the
//! contributions (TreeSHAP for the GBDT, coefficient × standardised value
//! for the logistic baseline); this module ranks and labels them.

use serde::{Deserialize, Serialize};

/// Contributions shown when a client does not say how many.
pub const DEFAULT_TOP_K: usize = 5;

/// One feature's share of a prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contribution {
    pub feature: String,
    /// The user's value of the feature.
    pub value: f64,
    /// Change of the log-odds this value causes (positive: more likely to
    /// churn).
    pub contribution: f64,
}

/// Why the model gave this user this probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Explanation {
    /// Log-odds before any feature is seen (the model's bias).
    pub base_value: f64,
    /// The `top_k` largest contributions by magnitude, largest first.
    pub contributions: Vec<Contribution>,
    /// Sum of the contributions not listed, so `base_value` + listed +
    /// `rest` = logit(probability) always.
    pub rest: f64,
}

/// Ranks `contributions` (one per feature, then the bias last, as models
/// return them) and keeps the `top_k` largest by magnitude.
///
/// # Panics
/// Never: mismatched lengths keep the shorter.
pub fn explain(
    names: &[String],
    values: &[f64],
    contributions: &[f64],
    top_k: usize,
) -> Explanation {
    let n = names.len().min(values.len());
    let base_value = contributions.get(n).copied().unwrap_or(0.0);
    let mut all: Vec<Contribution> = names
        .iter()
        .zip(values)
        .zip(contributions)
        .take(n)
        .map(|((feature, value), contribution)| Contribution {
            feature: feature.clone(),
            value: *value,
            contribution: *contribution,
        })
        .collect();
    // Largest magnitude first; ties by name so answers are stable.
    all.sort_by(|a, b| {
        b.contribution
            .abs()
            .total_cmp(&a.contribution.abs())
            .then_with(|| a.feature.cmp(&b.feature))
    });
    // From +0.0: `Sum` of nothing is -0.0, which would print as "-0.0".
    let rest = all.iter().skip(top_k).fold(0.0, |s, c| s + c.contribution);
    all.truncate(top_k);
    Explanation {
        base_value,
        contributions: all,
        rest,
    }
}

/// Mean absolute contribution per feature over `rows` (row-major, each
/// `names.len() + 1` wide): the model's global importance, normalised to
/// sum to 1 and sorted largest first.
pub fn global_importance(names: &[String], rows: &[f64]) -> Vec<(String, f64)> {
    let width = names.len() + 1;
    if rows.is_empty() || !rows.len().is_multiple_of(width) {
        return Vec::new();
    }
    let mut sums = vec![0.0; names.len()];
    for row in rows.chunks_exact(width) {
        for (s, c) in sums.iter_mut().zip(row) {
            *s += c.abs();
        }
    }
    let total: f64 = sums.iter().sum();
    let mut out: Vec<(String, f64)> = names
        .iter()
        .cloned()
        .zip(
            sums.into_iter()
                .map(|s| if total > 0.0 { s / total } else { 0.0 }),
        )
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i}")).collect()
    }

    #[test]
    fn top_k_by_magnitude_and_the_rest_keeps_the_sum() {
        let c = [0.1, -2.0, 0.5, 1.0, -0.3];
        let e = explain(&names(4), &[1.0, 2.0, 3.0, 4.0], &c, 2);
        assert_eq!(e.base_value, -0.3);
        let got: Vec<&str> = e.contributions.iter().map(|c| c.feature.as_str()).collect();
        assert_eq!(got, ["f1", "f3"]);
        assert_eq!(e.contributions[0].value, 2.0);
        let total =
            e.base_value + e.contributions.iter().map(|c| c.contribution).sum::<f64>() + e.rest;
        assert!((total - c.iter().sum::<f64>()).abs() < 1e-12);
    }

    #[test]
    fn importance_is_normalised_mean_magnitude() {
        let rows = [1.0, -3.0, 9.0, -1.0, 1.0, 9.0];
        let imp = global_importance(&names(2), &rows);
        assert_eq!(imp[0].0, "f1");
        assert!((imp[0].1 - 4.0 / 6.0).abs() < 1e-12);
        assert!((imp.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(global_importance(&names(2), &rows[..5]).is_empty());
    }
}
