//! The feature specification: one declarative list of features from which
//! every backend computes the same values **as of a time T**, using only
//! events with `event_time <= T`.
//!
//! The embedded store evaluates the spec with [`FeatureSpec::evaluate`]; the
//! ClickHouse backend renders the very same [`FeatureDef`]s to SQL. Nothing
//! here reads the clock: T is always an argument, which is what keeps
//! training sets point-in-time correct and serving consistent with training.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::time::{DAY_SECS, day_of};

/// Recency features ("days since last X") are capped here; a user who never
/// did X gets the cap, so "never" and "very long ago" look alike to models.
pub const RECENCY_CAP_DAYS: f64 = 365.0;

/// The event types the standard spec knows by name. Other types are stored
/// and count towards totals, but get no per-type features.
pub const STANDARD_EVENT_TYPES: [&str; 6] = [
    "login",
    "view",
    "add_to_cart",
    "purchase",
    "support_ticket",
    "logout",
];
/// The windows (days before T) of the standard windowed features.
pub const STANDARD_WINDOWS: [u32; 4] = [7, 14, 30, 90];

/// How the events selected by a feature's filter are reduced to a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Number of events.
    Count,
    /// Number of distinct UTC calendar days with an event.
    ActiveDays,
    /// Number of distinct non-empty `session_id`s.
    DistinctSessions,
    /// Sum of `amount` (absent amounts count as 0).
    SumAmount,
    /// `(T - latest event time) / 1 day`, capped at [`RECENCY_CAP_DAYS`];
    /// the cap when there is no event.
    DaysSinceLast,
    /// `(T - earliest event time) / 1 day`; 0 when there is no event.
    DaysSinceFirst,
}

/// What a feature computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureKind {
    /// An aggregation over the events with `event_time` in
    /// `(T - window_days, T]` (or `<= T` without a window), optionally only
    /// those of one `event_type`.
    Aggregate {
        aggregation: Aggregation,
        event_type: Option<String>,
        window_days: Option<u32>,
    },
    /// `scale * numerator / denominator`, or `default` when the denominator
    /// is 0. Both operands name features defined earlier in the spec.
    Ratio {
        numerator: String,
        denominator: String,
        scale: f64,
        default: f64,
    },
    /// Mean gap in days between consecutive distinct active days (0 with
    /// fewer than two active days).
    ActiveDayGapMean,
    /// Population standard deviation of those gaps (0 with fewer than two).
    ActiveDayGapStd,
}

/// One named feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDef {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
}

/// Why a spec is unusable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("feature {0:?} is defined twice")]
    Duplicate(String),
    #[error("feature {feature:?} refers to {operand:?}, which is not defined before it")]
    UnknownOperand { feature: String, operand: String },
    #[error("feature {0:?} has a zero-day window")]
    EmptyWindow(String),
}

/// A compact event as the evaluator sees it: the type is an index into the
/// spec's event types (or [`OTHER_TYPE`]), the session a non-zero hash (0 =
/// none), the amount 0.0 when absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserEvent {
    pub time: i64,
    pub type_idx: u16,
    pub session: u64,
    pub amount: f64,
}

/// Type index for event types the spec has no features for.
pub const OTHER_TYPE: u16 = u16::MAX;

/// Maps a session id to the non-zero key [`UserEvent`] uses for distinct
/// counts. `DefaultHasher::new()` has fixed keys, so this is deterministic;
/// keys are only compared within one evaluation, never stored.
pub fn session_key(session: Option<&str>) -> u64 {
    match session {
        None => 0,
        Some(s) => {
            let mut h = DefaultHasher::new();
            s.hash(&mut h);
            h.finish() | 1
        }
    }
}

#[derive(Debug, Clone)]
enum Compiled {
    Aggregate {
        aggregation: Aggregation,
        type_idx: Option<u16>,
        window_secs: Option<i64>,
    },
    Ratio {
        numerator: usize,
        denominator: usize,
        scale: f64,
        default: f64,
    },
    GapMean,
    GapStd,
}

/// A validated, ordered list of feature definitions.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    defs: Vec<FeatureDef>,
    event_types: Vec<String>,
    compiled: Vec<Compiled>,
}

impl FeatureSpec {
    /// Validates and compiles a list of definitions.
    ///
    /// # Errors
    /// [`SpecError`] for duplicates, forward/unknown references and empty windows.
    pub fn new(defs: Vec<FeatureDef>) -> Result<Self, SpecError> {
        let mut event_types: Vec<String> = Vec::new();
        let mut compiled = Vec::with_capacity(defs.len());
        for (i, def) in defs.iter().enumerate() {
            if defs[..i].iter().any(|d| d.name == def.name) {
                return Err(SpecError::Duplicate(def.name.clone()));
            }
            let index_of = |operand: &str| {
                defs[..i]
                    .iter()
                    .position(|d| d.name == operand)
                    .ok_or_else(|| SpecError::UnknownOperand {
                        feature: def.name.clone(),
                        operand: operand.to_string(),
                    })
            };
            compiled.push(match &def.kind {
                FeatureKind::Aggregate {
                    aggregation,
                    event_type,
                    window_days,
                } => {
                    if *window_days == Some(0) {
                        return Err(SpecError::EmptyWindow(def.name.clone()));
                    }
                    let type_idx = event_type.as_ref().map(|t| {
                        match event_types.iter().position(|k| k == t) {
                            Some(p) => p as u16,
                            None => {
                                event_types.push(t.clone());
                                (event_types.len() - 1) as u16
                            }
                        }
                    });
                    Compiled::Aggregate {
                        aggregation: *aggregation,
                        type_idx,
                        window_secs: window_days.map(|d| i64::from(d) * DAY_SECS),
                    }
                }
                FeatureKind::Ratio {
                    numerator,
                    denominator,
                    scale,
                    default,
                } => Compiled::Ratio {
                    numerator: index_of(numerator)?,
                    denominator: index_of(denominator)?,
                    scale: *scale,
                    default: *default,
                },
                FeatureKind::ActiveDayGapMean => Compiled::GapMean,
                FeatureKind::ActiveDayGapStd => Compiled::GapStd,
            });
        }
        Ok(Self {
            defs,
            event_types,
            compiled,
        })
    }

    /// The standard churn spec: the seed's four features (`days_active`,
    /// `total_events`, `avg_events_per_day`, `last_event_days_ago`) plus
    /// tenure, windowed activity, per-type counts and recencies, purchase
    /// amounts, activity trend and the rhythm of active days.
    pub fn standard() -> Self {
        use Aggregation::*;
        let agg = |name: String, aggregation, event_type: Option<&str>, window_days| FeatureDef {
            name,
            kind: FeatureKind::Aggregate {
                aggregation,
                event_type: event_type.map(str::to_string),
                window_days,
            },
        };
        let ratio = |name: &str, numerator: &str, denominator: &str, scale: f64| FeatureDef {
            name: name.to_string(),
            kind: FeatureKind::Ratio {
                numerator: numerator.to_string(),
                denominator: denominator.to_string(),
                scale,
                default: 0.0,
            },
        };
        let mut defs = vec![
            agg("days_active".into(), ActiveDays, None, None),
            agg("total_events".into(), Count, None, None),
            ratio("avg_events_per_day", "total_events", "days_active", 1.0),
            agg("last_event_days_ago".into(), DaysSinceLast, None, None),
            agg("tenure_days".into(), DaysSinceFirst, None, None),
        ];
        for w in STANDARD_WINDOWS {
            defs.push(agg(format!("events_{w}d"), Count, None, Some(w)));
            defs.push(agg(format!("active_days_{w}d"), ActiveDays, None, Some(w)));
            defs.push(agg(
                format!("sessions_{w}d"),
                DistinctSessions,
                None,
                Some(w),
            ));
        }
        for t in STANDARD_EVENT_TYPES {
            for w in STANDARD_WINDOWS {
                defs.push(agg(format!("{t}_count_{w}d"), Count, Some(t), Some(w)));
            }
        }
        for t in STANDARD_EVENT_TYPES {
            defs.push(agg(
                format!("days_since_last_{t}"),
                DaysSinceLast,
                Some(t),
                None,
            ));
        }
        defs.push(agg(
            "purchase_count_total".into(),
            Count,
            Some("purchase"),
            None,
        ));
        defs.push(agg(
            "purchase_amount_30d".into(),
            SumAmount,
            Some("purchase"),
            Some(30),
        ));
        defs.push(agg(
            "purchase_amount_90d".into(),
            SumAmount,
            Some("purchase"),
            Some(90),
        ));
        defs.push(agg(
            "purchase_amount_total".into(),
            SumAmount,
            Some("purchase"),
            None,
        ));
        // Last week's daily rate against the 30-day daily mean: 1.0 is
        // steady, below 1 is decaying engagement.
        defs.push(ratio(
            "activity_trend_7d_30d",
            "events_7d",
            "events_30d",
            30.0 / 7.0,
        ));
        defs.push(FeatureDef {
            name: "active_day_gap_mean".into(),
            kind: FeatureKind::ActiveDayGapMean,
        });
        defs.push(FeatureDef {
            name: "active_day_gap_std".into(),
            kind: FeatureKind::ActiveDayGapStd,
        });
        // The standard list is fixed and covered by tests; failing here is a
        // programming error, not an input error.
        Self::new(defs).expect("the standard feature spec is valid")
    }

    pub fn defs(&self) -> &[FeatureDef] {
        &self.defs
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.defs.iter().map(|d| d.name.clone()).collect()
    }

    /// Position of a feature by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.name == name)
    }

    /// Event types referenced by the spec, in index order.
    pub fn event_types(&self) -> &[String] {
        &self.event_types
    }

    /// The index the evaluator uses for an event type.
    pub fn type_index(&self, event_type: &str) -> u16 {
        self.event_types
            .iter()
            .position(|t| t == event_type)
            .map_or(OTHER_TYPE, |p| p as u16)
    }

    /// A short fingerprint of the definitions: models record it, and serving
    /// refuses a model whose features were defined differently.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(&self.defs).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..8])
    }

    /// Computes every feature as of `as_of` from one user's events, which
    /// must be sorted by time. Events after `as_of` are ignored, which is what
    /// makes training rows point-in-time correct. Returns `false` (and leaves
    /// `out` empty) when the user has no event at or before `as_of`.
    pub fn evaluate(&self, events: &[UserEvent], as_of: i64, out: &mut Vec<f64>) -> bool {
        out.clear();
        let end = events.partition_point(|e| e.time <= as_of);
        let history = &events[..end];
        if history.is_empty() {
            return false;
        }
        let mut sessions = Vec::new();
        for c in &self.compiled {
            let value = match *c {
                Compiled::Aggregate {
                    aggregation,
                    type_idx,
                    window_secs,
                } => {
                    let start =
                        window_secs.map_or(0, |w| history.partition_point(|e| e.time <= as_of - w));
                    let selected = history[start..]
                        .iter()
                        .filter(|e| type_idx.is_none_or(|t| e.type_idx == t));
                    aggregate(aggregation, selected, as_of, &mut sessions)
                }
                Compiled::Ratio {
                    numerator,
                    denominator,
                    scale,
                    default,
                } => {
                    let den = out[denominator];
                    if den == 0.0 {
                        default
                    } else {
                        scale * out[numerator] / den
                    }
                }
                Compiled::GapMean => gap_stats(history).0,
                Compiled::GapStd => gap_stats(history).1,
            };
            out.push(value);
        }
        true
    }
}

fn aggregate<'a>(
    aggregation: Aggregation,
    mut selected: impl Iterator<Item = &'a UserEvent>,
    as_of: i64,
    sessions: &mut Vec<u64>,
) -> f64 {
    match aggregation {
        Aggregation::Count => selected.count() as f64,
        Aggregation::ActiveDays => {
            // Events are time-sorted, so days only change forward.
            let mut last_day = None;
            let mut days = 0u32;
            for e in selected {
                let d = day_of(e.time);
                if last_day != Some(d) {
                    days += 1;
                    last_day = Some(d);
                }
            }
            f64::from(days)
        }
        Aggregation::DistinctSessions => {
            sessions.clear();
            sessions.extend(selected.map(|e| e.session).filter(|s| *s != 0));
            sessions.sort_unstable();
            sessions.dedup();
            sessions.len() as f64
        }
        Aggregation::SumAmount => selected.map(|e| e.amount).sum(),
        Aggregation::DaysSinceLast => selected.last().map_or(RECENCY_CAP_DAYS, |e| {
            (days_between(e.time, as_of)).min(RECENCY_CAP_DAYS)
        }),
        Aggregation::DaysSinceFirst => selected.next().map_or(0.0, |e| days_between(e.time, as_of)),
    }
}

fn days_between(earlier: i64, later: i64) -> f64 {
    (later - earlier) as f64 / DAY_SECS as f64
}

/// Mean and population standard deviation of gaps (in days) between
/// consecutive distinct active days.
fn gap_stats(history: &[UserEvent]) -> (f64, f64) {
    let mut days = history.iter().map(|e| day_of(e.time));
    let Some(mut prev) = days.next() else {
        return (0.0, 0.0);
    };
    let (mut n, mut sum, mut sum_sq) = (0u32, 0i64, 0i64);
    for d in days {
        if d != prev {
            let gap = d - prev;
            n += 1;
            sum += gap;
            sum_sq += gap * gap;
            prev = d;
        }
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    // Integer sums keep the result exact and independent of summation order,
    // which is what lets other backends reproduce it bit for bit.
    let n = f64::from(n);
    let mean = sum as f64 / n;
    let var = (sum_sq as f64 / n - mean * mean).max(0.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600; // 2026-01-01 00:00:00
    const H: i64 = 3_600;

    fn ev(spec: &FeatureSpec, time: i64, t: &str, session: Option<&str>, amount: f64) -> UserEvent {
        UserEvent {
            time,
            type_idx: spec.type_index(t),
            session: session_key(session),
            amount,
        }
    }

    fn value(spec: &FeatureSpec, out: &[f64], name: &str) -> f64 {
        out[spec.index_of(name).unwrap()]
    }

    #[test]
    fn standard_spec_has_the_seed_features_first() {
        let spec = FeatureSpec::standard();
        let names = spec.names();
        assert_eq!(
            &names[..4],
            [
                "days_active",
                "total_events",
                "avg_events_per_day",
                "last_event_days_ago"
            ]
        );
        assert!(spec.len() >= 45, "{}", spec.len());
        assert_eq!(spec.fingerprint(), FeatureSpec::standard().fingerprint());
    }

    #[test]
    fn hand_computed_example() {
        let spec = FeatureSpec::standard();
        let d = DAY_SECS;
        // Active days: T-40d, T-10d, T-10d (same day), T-3d, T (exactly at T).
        let events = vec![
            ev(&spec, T - 40 * d, "login", Some("a"), 0.0),
            ev(&spec, T - 10 * d, "view", Some("b"), 0.0),
            ev(&spec, T - 10 * d + H, "purchase", Some("b"), 20.0),
            ev(&spec, T - 3 * d, "login", Some("c"), 0.0),
            ev(&spec, T, "purchase", None, 5.5),
            // After T: must be invisible.
            ev(&spec, T + 1, "purchase", Some("z"), 1000.0),
            ev(&spec, T + 5 * d, "login", Some("y"), 0.0),
        ];
        let mut out = Vec::new();
        assert!(spec.evaluate(&events, T, &mut out));
        assert_eq!(out.len(), spec.len());
        assert_eq!(value(&spec, &out, "days_active"), 4.0);
        assert_eq!(value(&spec, &out, "total_events"), 5.0);
        assert_eq!(value(&spec, &out, "avg_events_per_day"), 1.25);
        assert_eq!(value(&spec, &out, "last_event_days_ago"), 0.0);
        assert_eq!(value(&spec, &out, "tenure_days"), 40.0);
        assert_eq!(value(&spec, &out, "events_7d"), 2.0);
        assert_eq!(value(&spec, &out, "events_14d"), 4.0);
        assert_eq!(value(&spec, &out, "events_30d"), 4.0);
        assert_eq!(value(&spec, &out, "events_90d"), 5.0);
        assert_eq!(value(&spec, &out, "active_days_14d"), 3.0);
        assert_eq!(value(&spec, &out, "sessions_14d"), 2.0);
        assert_eq!(value(&spec, &out, "sessions_90d"), 3.0);
        assert_eq!(value(&spec, &out, "purchase_count_7d"), 1.0);
        assert_eq!(value(&spec, &out, "purchase_count_total"), 2.0);
        assert_eq!(value(&spec, &out, "purchase_amount_30d"), 25.5);
        assert_eq!(value(&spec, &out, "login_count_30d"), 1.0);
        assert_eq!(value(&spec, &out, "days_since_last_login"), 3.0);
        assert_eq!(value(&spec, &out, "days_since_last_view"), 10.0);
        assert_eq!(
            value(&spec, &out, "days_since_last_support_ticket"),
            RECENCY_CAP_DAYS
        );
        // 7-day rate 2/7 against 30-day rate 4/30.
        let trend = value(&spec, &out, "activity_trend_7d_30d");
        assert!((trend - (2.0 / 7.0) / (4.0 / 30.0)).abs() < 1e-12);
        // Gaps between active days: 30, 7, 3 -> mean 40/3.
        let mean = value(&spec, &out, "active_day_gap_mean");
        assert!((mean - 40.0 / 3.0).abs() < 1e-12);
        let var = (30f64.powi(2) + 49.0 + 9.0) / 3.0 - (40.0f64 / 3.0).powi(2);
        assert!((value(&spec, &out, "active_day_gap_std") - var.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn window_boundaries_are_half_open() {
        let spec = FeatureSpec::standard();
        // Exactly 7 days before T falls outside the 7-day window (T-7d, T].
        let events = vec![
            ev(&spec, T - 7 * DAY_SECS, "view", None, 0.0),
            ev(&spec, T - 7 * DAY_SECS + 1, "view", None, 0.0),
        ];
        let mut out = Vec::new();
        spec.evaluate(&events, T, &mut out);
        assert_eq!(value(&spec, &out, "view_count_7d"), 1.0);
        assert_eq!(value(&spec, &out, "view_count_14d"), 2.0);
    }

    #[test]
    fn no_history_before_t_means_no_row_and_single_event_users_work() {
        let spec = FeatureSpec::standard();
        let events = vec![ev(&spec, T + 10, "login", None, 0.0)];
        let mut out = vec![1.0];
        assert!(!spec.evaluate(&events, T, &mut out));
        assert!(out.is_empty());
        assert!(spec.evaluate(&events, T + 10 + DAY_SECS / 2, &mut out));
        assert_eq!(value(&spec, &out, "days_active"), 1.0);
        assert_eq!(value(&spec, &out, "last_event_days_ago"), 0.5);
        assert_eq!(value(&spec, &out, "active_day_gap_mean"), 0.0);
        assert_eq!(value(&spec, &out, "activity_trend_7d_30d"), 30.0 / 7.0);
    }

    #[test]
    fn recency_is_capped_and_unknown_types_only_count_in_totals() {
        let spec = FeatureSpec::standard();
        let events = vec![ev(&spec, T - 500 * DAY_SECS, "webinar", None, 0.0)];
        assert_eq!(events[0].type_idx, OTHER_TYPE);
        let mut out = Vec::new();
        spec.evaluate(&events, T, &mut out);
        assert_eq!(value(&spec, &out, "last_event_days_ago"), RECENCY_CAP_DAYS);
        assert_eq!(value(&spec, &out, "total_events"), 1.0);
        assert_eq!(value(&spec, &out, "login_count_90d"), 0.0);
    }

    #[test]
    fn invalid_specs_are_refused() {
        let count = |name: &str| FeatureDef {
            name: name.into(),
            kind: FeatureKind::Aggregate {
                aggregation: Aggregation::Count,
                event_type: None,
                window_days: Some(7),
            },
        };
        assert_eq!(
            FeatureSpec::new(vec![count("a"), count("a")]).unwrap_err(),
            SpecError::Duplicate("a".into())
        );
        let forward = FeatureDef {
            name: "r".into(),
            kind: FeatureKind::Ratio {
                numerator: "a".into(),
                denominator: "b".into(),
                scale: 1.0,
                default: 0.0,
            },
        };
        assert!(matches!(
            FeatureSpec::new(vec![count("a"), forward]),
            Err(SpecError::UnknownOperand { .. })
        ));
    }
}
