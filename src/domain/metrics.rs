//! Evaluation metrics for probabilistic binary classifiers: ROC AUC, PR AUC
//! (average precision), log loss and Brier score.
//!
//! Written by hand because they are a few lines each and the available
//! crates either pull a dataframe stack or lack tie handling; the tests pin
//! them to values computed independently (scikit-learn's definitions).

use serde::{Deserialize, Serialize};

/// Metrics of one model on one labelled set (label `true` = churned).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub auc: f64,
    pub pr_auc: f64,
    pub logloss: f64,
    pub brier: f64,
}

/// Why a set cannot be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("scores and labels differ in length ({0} vs {1})")]
    LengthMismatch(usize, usize),
    #[error("the set needs both churned and retained users (positives {positives} of {total})")]
    SingleClass { positives: usize, total: usize },
}

/// Computes all metrics at once.
///
/// # Errors
/// [`MetricError`] when lengths differ or only one class is present.
pub fn evaluate(scores: &[f64], labels: &[bool]) -> Result<Evaluation, MetricError> {
    Ok(Evaluation {
        auc: roc_auc(scores, labels)?,
        pr_auc: average_precision(scores, labels)?,
        logloss: log_loss(scores, labels)?,
        brier: brier(scores, labels)?,
    })
}

fn check(scores: &[f64], labels: &[bool]) -> Result<usize, MetricError> {
    if scores.len() != labels.len() {
        return Err(MetricError::LengthMismatch(scores.len(), labels.len()));
    }
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 || positives == labels.len() {
        return Err(MetricError::SingleClass {
            positives,
            total: labels.len(),
        });
    }
    Ok(positives)
}

/// Indices sorted by descending score (NaN last).
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// Area under the ROC curve; tied scores count one half (Mann–Whitney U).
///
/// # Errors
/// [`MetricError`] when lengths differ or only one class is present.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let positives = check(scores, labels)?;
    let negatives = labels.len() - positives;
    let idx = order_desc(scores);
    // Walk groups of tied scores from the top: each positive in a group beats
    // every negative below the group and ties half of those inside it.
    let (mut negatives_above, mut wins) = (0usize, 0.0f64);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        let (mut p, mut n) = (0usize, 0usize);
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                p += 1;
            } else {
                n += 1;
            }
            j += 1;
        }
        let below = negatives - negatives_above - n;
        wins += p as f64 * (below as f64 + n as f64 / 2.0);
        negatives_above += n;
        i = j;
    }
    Ok(wins / (positives as f64 * negatives as f64))
}

/// Average precision (area under the precision–recall curve, step-wise, as
/// scikit-learn's `average_precision_score`).
///
/// # Errors
/// [`MetricError`] when lengths differ or only one class is present.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let positives = check(scores, labels)?;
    let idx = order_desc(scores);
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
        i = j;
    }
    Ok(ap)
}

/// Mean negative log-likelihood, probabilities clipped to `[1e-15, 1-1e-15]`.
///
/// # Errors
/// [`MetricError`] when lengths differ or only one class is present.
pub fn log_loss(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    check(scores, labels)?;
    let eps = 1e-15;
    let sum: f64 = scores
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(eps, 1.0 - eps);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    Ok(sum / scores.len() as f64)
}

/// Mean squared error of the probabilities.
///
/// # Errors
/// [`MetricError`] when lengths differ or only one class is present.
pub fn brier(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    check(scores, labels)?;
    let sum: f64 = scores
        .iter()
        .zip(labels)
        .map(|(&p, &y)| (p - if y { 1.0 } else { 0.0 }).powi(2))
        .sum();
    Ok(sum / scores.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    // The classic scikit-learn example y = [0,0,1,1], s = [0.1,0.4,0.35,0.8]:
    // roc_auc 0.75 and average precision 0.8333 (its documented values);
    // log loss = -(ln .9 + ln .6 + ln .35 + ln .8) / 4; brier = mean of
    // .01, .16, .4225, .04 = 0.158125.
    #[test]
    fn sklearn_reference_example() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        close(roc_auc(&s, &y).unwrap(), 0.75);
        close(average_precision(&s, &y).unwrap(), 0.833_333_333_333_333_4);
        let expected = -(0.9f64.ln() + 0.6f64.ln() + 0.35f64.ln() + 0.8f64.ln()) / 4.0;
        close(log_loss(&s, &y).unwrap(), expected);
        close(brier(&s, &y).unwrap(), 0.158_125);
    }

    #[test]
    fn ties_count_half_and_perfect_and_inverse_rankings() {
        close(roc_auc(&[0.5, 0.5], &[true, false]).unwrap(), 0.5);
        close(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]).unwrap(),
            1.0,
        );
        close(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]).unwrap(),
            0.0,
        );
        // All tied: AP equals the positive rate.
        close(
            average_precision(&[0.3; 4], &[true, false, false, false]).unwrap(),
            0.25,
        );
    }

    #[test]
    fn single_class_and_length_mismatch_are_errors() {
        assert!(matches!(
            roc_auc(&[0.1, 0.2], &[true, true]),
            Err(MetricError::SingleClass { .. })
        ));
        assert!(matches!(
            evaluate(&[0.1], &[true, false]),
            Err(MetricError::LengthMismatch(1, 2))
        ));
    }

    #[test]
    fn log_loss_clips_certain_mistakes() {
        let l = log_loss(&[0.0, 1.0], &[true, false]).unwrap();
        assert!(l.is_finite() && l > 30.0);
    }
}
