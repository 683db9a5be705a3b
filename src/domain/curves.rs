//! Evaluation curves recorded with a model for the dashboard: ROC,
//! precision–recall and cumulative lift, each thinned to at most
//! [`CURVE_POINTS`] points so a model's metadata stays small.

use serde::{Deserialize, Serialize};

/// Points kept per curve.
pub const CURVE_POINTS: usize = 50;

/// A model's curves on one labelled set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// `[false positive rate, true positive rate]` from (0,0) to (1,1).
    pub roc: Vec<[f64; 2]>,
    /// `[recall, precision]`, recall ascending.
    pub pr: Vec<[f64; 2]>,
    /// `[share of users contacted, churn rate among them / overall rate]`,
    /// highest scores contacted first.
    pub lift: Vec<[f64; 2]>,
}

/// The curves of `scores` against `labels`; empty when the set has one
/// class only or lengths differ.
pub fn curves(scores: &[f64], labels: &[bool]) -> Curves {
    let positives = labels.iter().filter(|l| **l).count();
    let total = labels.len();
    if scores.len() != total || positives == 0 || positives == total {
        return Curves::default();
    }
    let negatives = total - positives;
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // Cut points: after each group of tied scores, thinned to about
    // CURVE_POINTS evenly spaced positions.
    let step = total.div_ceil(CURVE_POINTS).max(1);
    let rate = positives as f64 / total as f64;
    let mut out = Curves {
        roc: vec![[0.0, 0.0]],
        pr: Vec::new(),
        lift: Vec::new(),
    };
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut last_cut = 0usize;
    let mut i = 0;
    while i < total {
        let s = scores[order[i]];
        while i < total && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        if i - last_cut >= step || i == total {
            last_cut = i;
            out.roc
                .push([fp as f64 / negatives as f64, tp as f64 / positives as f64]);
            out.pr
                .push([tp as f64 / positives as f64, tp as f64 / (tp + fp) as f64]);
            out.lift
                .push([i as f64 / total as f64, (tp as f64 / i as f64) / rate]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_ranking_has_the_ideal_curves() {
        let scores: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        let labels: Vec<bool> = (0..100).map(|i| i >= 80).collect();
        let c = curves(&scores, &labels);
        assert!(c.roc.len() > 2 && c.roc.len() <= CURVE_POINTS + 1);
        assert_eq!(c.roc.first(), Some(&[0.0, 0.0]));
        assert_eq!(c.roc.last(), Some(&[1.0, 1.0]));
        // Until every churner is found, nobody retained is.
        assert!(c.roc.iter().all(|[f, t]| *f == 0.0 || *t == 1.0));
        // The first fifth contacted holds every churner: lift 5.
        let at_fifth = c
            .lift
            .iter()
            .find(|[s, _]| (*s - 0.2).abs() < 1e-9)
            .unwrap();
        assert!((at_fifth[1] - 5.0).abs() < 1e-9);
        assert!(c.pr.iter().all(|[r, p]| *r < 1.0 || *p <= 1.0));
        assert_eq!(c.lift.last().map(|p| p[1]), Some(1.0));
    }

    #[test]
    fn one_class_has_no_curves() {
        assert_eq!(curves(&[0.1, 0.2], &[true, true]), Curves::default());
    }
}
