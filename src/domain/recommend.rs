//! Settings chosen from the shape of a log: the churn horizon and the
//! lookback from how often users come back, the rebuild rule from how old
//! the newest event is. Pure: `churn profile` and `churn init` hand in what
//! they measured and print the reasons with the values.
//!
//! The rules, in days:
//! - **horizon** H: the smallest round value at least the median user's
//!   mean gap between active days (a shorter horizon calls most returning
//!   users churned), at most a quarter of the log's span (the labels of the
//!   validation cutoff and of several training cutoffs must fit in it);
//! - **lookback** L: the smallest round value at least twice the horizon
//!   and at least that median gap, at most a third of the span, and never
//!   shorter than the horizon;
//! - **rebuild rule**: `auto` (a log whose newest event is more than a week
//!   old is served as of its end).

use serde::Serialize;

/// Round values the recommendations are taken from.
pub const ROUND_DAYS: [u32; 14] = [7, 14, 21, 28, 30, 45, 60, 90, 120, 180, 270, 365, 540, 730];

/// What a log looks like, as measured.
#[derive(Debug, Clone, Copy)]
pub struct LogShape {
    /// Days from the first to the newest event.
    pub span_days: f64,
    /// Median over users with two or more active days of their mean gap.
    pub median_gap_days: Option<f64>,
    /// Days from the newest event to now.
    pub age_days: f64,
}

/// The chosen settings and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub horizon_days: u32,
    pub lookback_days: u32,
    /// `schedule.features_as_of`.
    pub features_as_of: &'static str,
    /// One line per choice, with the measured value it rests on.
    pub reasons: Vec<String>,
}

fn round_up(days: f64) -> u32 {
    ROUND_DAYS
        .iter()
        .copied()
        .find(|d| f64::from(*d) >= days)
        .unwrap_or(ROUND_DAYS[ROUND_DAYS.len() - 1])
}

fn round_down(days: f64) -> u32 {
    ROUND_DAYS
        .iter()
        .rev()
        .copied()
        .find(|d| f64::from(*d) <= days)
        .unwrap_or(ROUND_DAYS[0])
}

/// The recommended settings for a log of this shape.
pub fn recommend(shape: LogShape) -> Recommendation {
    let mut reasons = Vec::new();
    let gap = shape.median_gap_days.unwrap_or(30.0).max(1.0);
    let max_horizon = (shape.span_days / 4.0).max(7.0);
    let mut horizon = round_up(gap);
    match shape.median_gap_days {
        Some(g) => reasons.push(format!(
            "training.horizon_days = {horizon}: the median user comes back every {g:.1} days, \
             so a shorter horizon would call most returning users churned"
        )),
        None => reasons.push(format!(
            "training.horizon_days = {horizon}: too few users come back twice to measure a gap"
        )),
    }
    if f64::from(horizon) > max_horizon {
        horizon = round_down(max_horizon);
        reasons.push(format!(
            "  shortened to {horizon}: the log spans {:.0} days, and the validation horizon and \
             several training cutoffs' labels must fit in it (at most a quarter of the span)",
            shape.span_days
        ));
    }
    let max_lookback = (shape.span_days / 3.0).max(f64::from(horizon));
    let mut lookback = round_up((2.0 * f64::from(horizon)).max(gap));
    reasons.push(format!(
        "training.lookback_days = {lookback}: twice the horizon, so a user counts as active \
         when seen within two of their usual returns"
    ));
    if f64::from(lookback) > max_lookback {
        lookback = round_down(max_lookback).max(horizon);
        reasons.push(format!(
            "  shortened to {lookback}: at most a third of the {:.0}-day span leaves history \
             for the features",
            shape.span_days
        ));
    }
    let features_as_of = "auto";
    if shape.age_days > 7.0 {
        reasons.push(format!(
            "schedule.features_as_of = \"auto\": the newest event is {:.0} days old, so features \
             are served, scored and monitored as of the end of the log",
            shape.age_days
        ));
    } else {
        reasons.push(
            "schedule.features_as_of = \"auto\": the log is live (its newest event is recent), \
             so features are as of now"
                .into(),
        );
    }
    Recommendation {
        horizon_days: horizon,
        lookback_days: lookback,
        features_as_of,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grocery_log_of_four_months_gets_short_windows() {
        let r = recommend(LogShape {
            span_days: 119.0,
            median_gap_days: Some(17.0),
            age_days: 9_000.0,
        });
        assert_eq!((r.horizon_days, r.lookback_days), (21, 30));
        assert_eq!(r.features_as_of, "auto");
        assert!(r.reasons.iter().any(|x| x.contains("17.0 days")), "{r:?}");
    }

    #[test]
    fn a_sparse_multi_year_log_gets_long_windows_within_the_span() {
        let r = recommend(LogShape {
            span_days: 2_614.0,
            median_gap_days: Some(75.0),
            age_days: 3_500.0,
        });
        assert_eq!((r.horizon_days, r.lookback_days), (90, 180));
        // An 18-month purchase log with quarterly buyers.
        let r = recommend(LogShape {
            span_days: 545.0,
            median_gap_days: Some(110.0),
            age_days: 9_000.0,
        });
        assert_eq!((r.horizon_days, r.lookback_days), (120, 180));
        assert!(r.reasons.iter().any(|x| x.contains("shortened")), "{r:?}");
    }

    #[test]
    fn a_short_live_log_is_capped_by_its_span() {
        let r = recommend(LogShape {
            span_days: 40.0,
            median_gap_days: Some(30.0),
            age_days: 0.5,
        });
        assert!(r.horizon_days <= 10 && r.horizon_days >= 7, "{r:?}");
        assert!(
            r.lookback_days >= r.horizon_days && r.lookback_days <= 14,
            "{r:?}"
        );
        assert!(r.reasons.iter().any(|x| x.contains("live")), "{r:?}");
        let unknown = recommend(LogShape {
            span_days: 400.0,
            median_gap_days: None,
            age_days: 1.0,
        });
        assert_eq!(unknown.horizon_days, 30);
    }
}
