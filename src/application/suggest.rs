//! `churn features suggest`: a feature spec written for the event types a
//! store actually holds, instead of the generator's. Pure: it reads the
//! store's type counts and time range and returns a spec to review.
//!
//! - Windows: 7, 30, 90 and 365 days, those shorter than ¾ of the span.
//! - Global: activity days, counts and sessions per window, recency,
//!   tenure, the activity trend and the rhythm of active days.
//! - Per type (the most frequent ones, at most [`MAX_TYPES`], each at least
//!   [`MIN_TYPE_SHARE`] of the events): counts per window, total, recency;
//!   with amounts, their sum per window and in all, mean and max; with
//!   negative amounts (refunds, cancellations), the refunds' count and sum
//!   and their share of the type's events, while mean and max describe the
//!   positive amounts.

use crate::application::ports::{EventStats, TypeCount};
use crate::domain::features::{Aggregation, AmountSign, FeatureDef, FeatureSpec, SpecError};
use crate::domain::time::DAY_SECS;

/// Most event types that get features of their own.
pub const MAX_TYPES: usize = 25;
/// Rarer types count in the totals only.
pub const MIN_TYPE_SHARE: f64 = 0.002;
const WINDOWS: [u32; 4] = [7, 30, 90, 365];

/// An identifier from an event type (`add-to-cart` → `add_to_cart`); a
/// type with no ASCII letters or digits (`купить`) gets one from its hash.
fn ident(t: &str) -> String {
    let mut s = String::with_capacity(t.len());
    for c in t.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('_') {
            s.push('_');
        }
    }
    let s = s.trim_matches('_');
    if s.is_empty() {
        let h = t.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        return format!("type_{:08x}", h as u32);
    }
    if s.as_bytes()[0].is_ascii_digit() {
        format!("t_{s}")
    } else {
        s.to_string()
    }
}

/// The suggested spec for a store's contents.
///
/// # Errors
/// [`SpecError`] only if the generated definitions clash (a bug).
pub fn suggest(stats: &EventStats, types: &[TypeCount]) -> Result<FeatureSpec, SpecError> {
    use Aggregation::*;
    let span_days = match (stats.first_event_time, stats.last_event_time) {
        (Some(a), Some(b)) => (b - a) as f64 / DAY_SECS as f64,
        _ => 0.0,
    };
    let mut windows: Vec<u32> = WINDOWS
        .into_iter()
        .filter(|w| f64::from(*w) <= 0.75 * span_days)
        .collect();
    if windows.is_empty() {
        windows.push(7);
    }
    let sessions = types.iter().any(|t| t.with_session > 0);
    let total: u64 = types.iter().map(|t| t.events).sum::<u64>().max(1);
    let agg = |name: String, a, types: &[&str], w| FeatureDef::aggregate(name, a, types, w);
    let mut defs = vec![
        agg("days_active".into(), ActiveDays, &[], None),
        agg("total_events".into(), Count, &[], None),
        FeatureDef::ratio("avg_events_per_day", "total_events", "days_active", 1.0),
        agg("last_event_days_ago".into(), DaysSinceLast, &[], None),
        agg("tenure_days".into(), DaysSinceFirst, &[], None),
    ];
    for &w in &windows {
        defs.push(agg(format!("events_{w}d"), Count, &[], Some(w)));
        defs.push(agg(format!("active_days_{w}d"), ActiveDays, &[], Some(w)));
        if sessions {
            defs.push(agg(
                format!("sessions_{w}d"),
                DistinctSessions,
                &[],
                Some(w),
            ));
        }
    }
    if windows.contains(&7) && windows.contains(&30) {
        defs.push(FeatureDef::ratio(
            "activity_trend_7d_30d",
            "events_7d",
            "events_30d",
            30.0 / 7.0,
        ));
    }
    defs.push(agg("active_day_gap_mean".into(), GapMean, &[], None));
    defs.push(agg("active_day_gap_std".into(), GapStd, &[], None));
    let mut used = std::collections::HashSet::new();
    for t in types
        .iter()
        .filter(|t| t.events as f64 / total as f64 >= MIN_TYPE_SHARE)
        .take(MAX_TYPES)
    {
        let mut base = ident(&t.event_type);
        while !used.insert(base.clone()) {
            base.push('_');
        }
        let ty = [t.event_type.as_str()];
        for &w in &windows {
            defs.push(agg(format!("{base}_count_{w}d"), Count, &ty, Some(w)));
        }
        defs.push(agg(format!("{base}_count_total"), Count, &ty, None));
        defs.push(agg(
            format!("days_since_last_{base}"),
            DaysSinceLast,
            &ty,
            None,
        ));
        if t.with_amount > 0 {
            let widest = windows.last().copied();
            defs.push(agg(format!("{base}_amount_total"), SumAmount, &ty, None));
            if let Some(w) = widest {
                defs.push(agg(format!("{base}_amount_{w}d"), SumAmount, &ty, Some(w)));
            }
            // With refunds in the log, "typical" and "largest" describe the
            // sales; the refunds get features of their own below.
            let sign = (t.with_negative_amount > 0).then_some(AmountSign::Positive);
            let signed = |mut d: FeatureDef| {
                d.amount_sign = sign;
                d
            };
            defs.push(signed(agg(
                format!("{base}_amount_mean"),
                MeanAmount,
                &ty,
                None,
            )));
            defs.push(signed(agg(
                format!("{base}_amount_max"),
                MaxAmount,
                &ty,
                None,
            )));
        }
        if t.with_negative_amount > 0 {
            let refunds = |name: String, a, w| {
                let mut d = agg(name, a, &ty, w);
                d.amount_sign = Some(AmountSign::Negative);
                d
            };
            defs.push(refunds(format!("{base}_refund_count_total"), Count, None));
            if let Some(&w) = windows.last() {
                defs.push(refunds(format!("{base}_refund_count_{w}d"), Count, Some(w)));
            }
            defs.push(refunds(
                format!("{base}_refund_amount_total"),
                SumAmount,
                None,
            ));
            defs.push(refunds(
                format!("days_since_last_{base}_refund"),
                DaysSinceLast,
                None,
            ));
            defs.push(FeatureDef::ratio(
                format!("{base}_refund_share"),
                &format!("{base}_refund_count_total"),
                &format!("{base}_count_total"),
                1.0,
            ));
        }
    }
    FeatureSpec::new(defs, "suggested spec")
}

/// Rows compared when looking for repeated columns.
const REPEAT_SAMPLE_ROWS: usize = 50_000;

/// A column left out of a suggested spec, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Dropped {
    pub feature: String,
    /// The earlier feature it equals on every sampled user, or `None`
    /// when it is constant.
    pub same_as: Option<String>,
}

/// `spec` without the columns that tell a model nothing new on this data:
/// those constant over `snapshot` and those equal to an earlier column for
/// every user (a sample of 50,000 users on large stores), e.g. the
/// per-type counts of a log with one type. Operands of a kept ratio stay.
///
/// # Errors
/// [`SpecError`] only if the remaining definitions clash (a bug).
pub fn without_repeats(
    spec: &FeatureSpec,
    snapshot: &crate::domain::snapshot::FeatureSnapshot,
) -> Result<(FeatureSpec, Vec<Dropped>), SpecError> {
    let n = spec.len();
    if snapshot.is_empty() || snapshot.feature_names() != spec.names().as_slice() {
        return Ok((spec.clone(), Vec::new()));
    }
    let (_, rows) = snapshot.sample_rows(REPEAT_SAMPLE_ROWS);
    let m = rows.len() / n.max(1);
    let rows = &rows;
    let column = |j: usize| (0..m).map(move |i| rows[i * n + j]);
    let mut dropped: Vec<Option<Dropped>> = vec![None; n];
    for j in 0..n {
        let first = rows[j];
        if column(j).all(|v| v == first) {
            dropped[j] = Some(Dropped {
                feature: spec.defs()[j].name.clone(),
                same_as: None,
            });
            continue;
        }
        if let Some(i) = (0..j).find(|&i| dropped[i].is_none() && column(i).eq(column(j))) {
            dropped[j] = Some(Dropped {
                feature: spec.defs()[j].name.clone(),
                same_as: Some(spec.defs()[i].name.clone()),
            });
        }
    }
    // A kept ratio needs its operands.
    for (j, def) in spec.defs().iter().enumerate() {
        if dropped[j].is_some() || def.aggregation != Aggregation::Ratio {
            continue;
        }
        for operand in [&def.numerator, &def.denominator].into_iter().flatten() {
            if let Some(k) = spec.index_of(operand) {
                dropped[k] = None;
            }
        }
    }
    let kept: Vec<FeatureDef> = spec
        .defs()
        .iter()
        .zip(&dropped)
        .filter(|(_, d)| d.is_none())
        .map(|(def, _)| def.clone())
        .collect();
    Ok((
        FeatureSpec::new(kept, "suggested spec")?,
        dropped.into_iter().flatten().collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &str, events: u64, amounts: u64) -> TypeCount {
        TypeCount {
            event_type: t.into(),
            events,
            users: 10,
            with_amount: amounts,
            ..TypeCount::default()
        }
    }

    #[test]
    fn features_follow_the_types_and_span_present() {
        let stats = EventStats {
            events: 10_000,
            users: 100,
            first_event_time: Some(0),
            last_event_time: Some(200 * DAY_SECS),
        };
        let types = [
            count("answer", 6_000, 0),
            count("question", 3_969, 0),
            count("bounty-award", 30, 30),
            count("badge", 1, 0),
        ];
        let spec = suggest(&stats, &types).unwrap();
        let names = spec.names();
        for n in [
            "answer_count_90d",
            "days_since_last_question",
            "bounty_award_amount_mean",
            "activity_trend_7d_30d",
        ] {
            assert!(names.contains(&n.to_string()), "{n} in {names:?}");
        }
        // 365 days is longer than 3/4 of a 200-day span; sessions absent.
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with("_365d") || n.starts_with("sessions"))
        );
        // A type with 0.01% of the events gets none of its own.
        assert!(!names.iter().any(|n| n.contains("badge")));
        assert_eq!(spec.event_types(), ["answer", "question", "bounty-award"]);
        // What it writes reads back as the same spec.
        let again = FeatureSpec::from_toml(&spec.to_toml(), "features.toml").unwrap();
        assert_eq!(again.fingerprint(), spec.fingerprint());
    }

    #[test]
    fn refunds_in_the_store_get_features_of_their_own() {
        let stats = EventStats {
            events: 1_000,
            users: 100,
            first_event_time: Some(0),
            last_event_time: Some(400 * DAY_SECS),
        };
        let mut purchase = count("purchase", 1_000, 1_000);
        purchase.with_negative_amount = 20;
        let spec = suggest(&stats, &[purchase, count("Купить", 10, 0)]).unwrap();
        let names = spec.names();
        for n in [
            "purchase_refund_count_total",
            "purchase_refund_count_90d",
            "purchase_refund_amount_total",
            "days_since_last_purchase_refund",
            "purchase_refund_share",
        ] {
            assert!(names.contains(&n.to_string()), "{n} in {names:?}");
        }
        let mean = &spec.defs()[spec.index_of("purchase_amount_mean").unwrap()];
        assert_eq!(mean.amount_sign, Some(AmountSign::Positive));
        let refunds = &spec.defs()[spec.index_of("purchase_refund_amount_total").unwrap()];
        assert_eq!(refunds.amount_sign, Some(AmountSign::Negative));
        // A type without ASCII letters still gets identifiers.
        assert!(names.iter().any(|n| n.starts_with("type_")), "{names:?}");
        // Without negative amounts: no refund features, unsigned means.
        let plain = suggest(&stats, &[count("purchase", 1_000, 1_000)]).unwrap();
        assert!(!plain.names().iter().any(|n| n.contains("refund")));
        let again = FeatureSpec::from_toml(&spec.to_toml(), "features.toml").unwrap();
        assert_eq!(again.fingerprint(), spec.fingerprint());
    }

    #[test]
    fn repeated_and_constant_columns_are_left_out_but_ratio_operands_stay() {
        use crate::domain::features::Aggregation::{Count, SumAmount};
        use crate::domain::snapshot::FeatureSnapshot;
        let defs = vec![
            FeatureDef::aggregate("events_30d", Count, &[], Some(30)),
            FeatureDef::aggregate("purchase_count_30d", Count, &["purchase"], Some(30)),
            FeatureDef::aggregate("events_90d", Count, &[], Some(90)),
            FeatureDef::aggregate("purchase_count_90d", Count, &["purchase"], Some(90)),
            FeatureDef::aggregate("refund_total", SumAmount, &["refund"], None),
            FeatureDef::ratio("trend", "events_30d", "events_90d", 3.0),
        ];
        let spec = FeatureSpec::new(defs, "test").unwrap();
        let mut snapshot = FeatureSnapshot::new(0, 0, spec.names(), spec.fingerprint());
        for user in 0..50_u64 {
            let (a, b) = ((user % 7) as f64, (user % 11) as f64 + 7.0);
            // One type only: the purchase counts equal the event counts.
            snapshot.insert(user, &[a, a, b, b, 0.0, 3.0 * a / b]);
        }
        let (kept, dropped) = without_repeats(&spec, &snapshot).unwrap();
        assert_eq!(
            kept.names(),
            ["events_30d", "events_90d", "trend"],
            "{dropped:?}"
        );
        assert_eq!(
            dropped,
            [
                Dropped {
                    feature: "purchase_count_30d".into(),
                    same_as: Some("events_30d".into())
                },
                Dropped {
                    feature: "purchase_count_90d".into(),
                    same_as: Some("events_90d".into())
                },
                Dropped {
                    feature: "refund_total".into(),
                    same_as: None
                },
            ]
        );
        // The ratio's operand is kept even when it repeats another column.
        let mut same = FeatureSnapshot::new(0, 0, spec.names(), spec.fingerprint());
        for user in 0..50_u64 {
            let a = (user % 7) as f64 + 1.0;
            same.insert(user, &[a, a, a, a, 1.0 + user as f64, 0.5 * user as f64]);
        }
        let (kept, _) = without_repeats(&spec, &same).unwrap();
        assert_eq!(
            kept.names(),
            ["events_30d", "events_90d", "refund_total", "trend"]
        );
    }
}
