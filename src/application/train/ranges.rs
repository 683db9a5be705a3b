//! Diagnostics: features whose validation values leave the range they had
//! in the training rows. A feature that moves with the calendar rather
//! than with the user (tenure in a log whose users all joined in one
//! quarter, days since a launch) takes values at the validation cutoff that
//! no training row had; a model then says nothing it learned about them.
//! The logistic candidate holds such inputs at the training edge
//! (`LogisticModel::bounds`) and trees do so by construction; the warning
//! names the feature so a user can drop it from the spec.

use crate::domain::model::Dataset;

/// A warning is raised when more than this share of the validation rows
/// lies outside the training range: a few users beyond the busiest
/// training user are normal, most of them are not.
pub(super) const MAX_OUTSIDE_SHARE: f64 = 0.2;

/// One feature whose validation values leave the training range.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OutOfRange {
    pub(super) feature: String,
    /// Share of the validation rows outside `train`.
    pub(super) share: f64,
    pub(super) train: (f64, f64),
    pub(super) validation: (f64, f64),
}

impl OutOfRange {
    pub(super) fn warning(&self) -> String {
        format!(
            "feature {} spans {} to {} in the training rows but {} to {} at validation \
             ({:.0}% of the validation rows outside): it moves with the calendar, not the \
             user (like tenure in a log whose users joined together); the models hold it \
             at the training edge, and leaving it out of features.spec_file removes the doubt",
            self.feature,
            short(self.train.0),
            short(self.train.1),
            short(self.validation.0),
            short(self.validation.1),
            100.0 * self.share
        )
    }
}

fn short(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

fn range(set: &Dataset, j: usize) -> (f64, f64) {
    (0..set.len()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), i| {
        let x = set.row(i)[j];
        (lo.min(x), hi.max(x))
    })
}

/// The features of `validation` with more than [`MAX_OUTSIDE_SHARE`] of
/// their rows outside the range of `train`, in spec order.
pub(super) fn out_of_range(train: &Dataset, validation: &Dataset) -> Vec<OutOfRange> {
    if train.is_empty() || validation.is_empty() {
        return Vec::new();
    }
    (0..train.n_features())
        .filter_map(|j| {
            let (lo, hi) = range(train, j);
            let outside = (0..validation.len())
                .filter(|&i| {
                    let x = validation.row(i)[j];
                    x < lo || x > hi
                })
                .count();
            let share = outside as f64 / validation.len() as f64;
            (share > MAX_OUTSIDE_SHARE).then(|| OutOfRange {
                feature: train.feature_names[j].clone(),
                share,
                train: (lo, hi),
                validation: range(validation, j),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rows: &[[f64; 2]]) -> Dataset {
        let mut d = Dataset::with_columns(vec!["tenure_days".into(), "events_30d".into()]);
        for (i, r) in rows.iter().enumerate() {
            d.push(i as u64, r, i % 2 == 0);
        }
        d
    }

    #[test]
    fn a_feature_that_moves_with_the_calendar_is_named() {
        // Everyone joined together: tenure is 200-360 at the training
        // cutoffs and 370-450 at validation; activity stays in range
        // except for one busy user.
        let train = set(&[[200.0, 1.0], [280.0, 9.0], [360.0, 4.0], [300.0, 0.0]]);
        let validation = set(&[
            [370.0, 2.0],
            [410.0, 3.0],
            [450.0, 12.0],
            [380.0, 5.0],
            [400.0, 0.0],
            [420.0, 7.0],
        ]);
        let found = out_of_range(&train, &validation);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.feature, "tenure_days");
        assert_eq!(
            (f.share, f.train, f.validation),
            (1.0, (200.0, 360.0), (370.0, 450.0))
        );
        let w = f.warning();
        assert!(
            w.contains("200 to 360") && w.contains("370 to 450") && w.contains("100%"),
            "{w}"
        );
        assert!(out_of_range(&train, &train).is_empty());
        assert!(out_of_range(&train, &set(&[])).is_empty());
    }
}
