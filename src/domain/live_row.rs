//! A live feature row: one user's features evaluated at a time `as_of`, in
//! a form that gives the batch answer at any later time `t` until
//! `valid_until`, without the user's events.
//!
//! Between two events of a user, features change with time in two ways
//! only: every `days_since_*` value grows (it is `(t - reference) / 1 day`
//! with a fixed reference event), and a windowed aggregation changes when
//! an event leaves its window `(t - w, t]` (or a stored event dated after
//! `as_of` enters it). So a row keeps its values at `as_of`, the reference
//! time of each `days_since_*` value, and the first time any window's
//! content would change; [`LiveRow::at`] recomputes the moving values (and
//! the ratios over them) with the very formulas of
//! [`FeatureSpec::evaluate`], which is what makes it exact, not close.
//!
//! Memory: values are kept as the `f32` snapshots store (what serving
//! feeds the model), plus the full `f64` of the few values ratios divide
//! (a ratio is computed from unrounded operands) and the reference time of
//! each `days_since_*` value: about 0.5 KiB with the standard spec
//! (values, operands, anchors, the cache entry).

use super::features::{FeatureSpec, LiveTrack, UserEvent};
use super::snapshot::quantize;

/// One user's features, answerable at any time in `[as_of, valid_until)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRow {
    as_of: i64,
    valid_until: i64,
    /// Every value at `as_of`, rounded as snapshots store it.
    values: Box<[f32]>,
    /// Unrounded values of the features ratios divide.
    operands: Box<[(u32, f64)]>,
    anchors: Box<[(u32, i64)]>,
}

impl LiveRow {
    /// Evaluates `spec` over one user's time-sorted events as of `as_of`;
    /// `None` when the user has no event at or before it.
    pub fn evaluate(spec: &FeatureSpec, events: &[UserEvent], as_of: i64) -> Option<Self> {
        let mut out = Vec::with_capacity(spec.len());
        let mut track = LiveTrack::default();
        if !spec.evaluate_tracked(events, as_of, &mut out, Some(&mut track)) {
            return None;
        }
        let operands = spec
            .ratio_operands()
            .into_iter()
            .map(|i| (i as u32, out[i]))
            .collect();
        Some(Self {
            as_of,
            valid_until: track.valid_until,
            values: out.iter().map(|v| *v as f32).collect(),
            operands,
            anchors: track.anchors.into_boxed_slice(),
        })
    }

    pub fn as_of(&self) -> i64 {
        self.as_of
    }

    /// The first time at which [`LiveRow::at`] would no longer be exact.
    pub fn valid_until(&self) -> i64 {
        self.valid_until
    }

    /// Whether [`LiveRow::at`] answers exactly at `t`.
    pub fn answers_at(&self, t: i64) -> bool {
        self.as_of <= t && t < self.valid_until
    }

    /// The features at `t` (which [`LiveRow::answers_at`]), rounded as a
    /// snapshot stores them: equal, bit for bit, to
    /// [`FeatureSpec::evaluate`] at `t` over the same events, rounded with
    /// [`quantize`].
    pub fn at(&self, spec: &FeatureSpec, t: i64, out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.values.iter().map(|v| f64::from(*v)));
        if t != self.as_of {
            // The moving values from unrounded inputs, as the batch
            // evaluator computes them, then rounded.
            for &(i, v) in &self.operands {
                out[i as usize] = v;
            }
            spec.advance(out, &self.anchors, t);
            for v in out.iter_mut() {
                *v = quantize(*v);
            }
        }
    }

    /// Bytes this row holds on the heap, for the memory bound.
    pub fn heap_bytes(&self) -> usize {
        self.values.len() * size_of::<f32>()
            + self.operands.len() * size_of::<(u32, f64)>()
            + self.anchors.len() * size_of::<(u32, i64)>()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::features::Aggregation;
    use crate::domain::features::{AmountSign, FeatureDef, session_key};
    use crate::domain::time::DAY_SECS;

    const T0: i64 = 1_767_225_600; // 2026-01-01
    const TYPES: [&str; 3] = ["login", "purchase", "support_ticket"];

    fn arb_def(i: usize) -> impl Strategy<Value = FeatureDef> {
        let aggs: Vec<Aggregation> = Aggregation::ALL
            .into_iter()
            .filter(|a| *a != Aggregation::Ratio)
            .collect();
        (
            prop::sample::select(aggs),
            prop::collection::vec(prop::sample::select(TYPES.to_vec()), 0..3),
            prop::option::of(prop::sample::select(vec![1u32, 2, 7, 30])),
            prop::option::of(prop::sample::select(vec![
                AmountSign::Positive,
                AmountSign::Negative,
            ])),
        )
            .prop_map(move |(aggregation, types, window, sign)| {
                let mut d = FeatureDef::aggregate(format!("f{i}"), aggregation, &types, window);
                d.amount_sign = sign;
                d
            })
    }

    /// Random aggregations, then ratios over them (and over each other).
    fn arb_spec() -> impl Strategy<Value = FeatureSpec> {
        (1usize..8)
            .prop_flat_map(|n| {
                (
                    (0..n).map(arb_def).collect::<Vec<_>>(),
                    prop::collection::vec((0usize..64, 0usize..64), 0..3),
                )
            })
            .prop_map(|(mut defs, ratios)| {
                for (k, (a, b)) in ratios.into_iter().enumerate() {
                    let n = defs.len();
                    let (num, den) = (defs[a % n].name.clone(), defs[b % n].name.clone());
                    defs.push(FeatureDef::ratio(format!("r{k}"), &num, &den, 7.0));
                }
                FeatureSpec::new(defs, "random").expect("generated specs are valid")
            })
    }

    fn arb_events(spec: FeatureSpec) -> impl Strategy<Value = (FeatureSpec, Vec<UserEvent>)> {
        prop::collection::vec(
            (
                0i64..40 * DAY_SECS,
                0usize..4,
                prop::option::of(0u8..4),
                prop::option::of(-50i32..50),
            ),
            0..40,
        )
        .prop_map(move |raw| {
            let mut events: Vec<UserEvent> = raw
                .into_iter()
                .map(|(dt, ty, session, amount)| UserEvent {
                    time: T0 + dt,
                    type_idx: TYPES
                        .get(ty)
                        .map_or(crate::domain::features::OTHER_TYPE, |t| spec.type_index(t)),
                    session: session_key(session.map(|s| format!("s{s}")).as_deref()),
                    amount: amount.map(|a| f64::from(a) * 0.37),
                })
                .collect();
            events.sort_by_key(|e| e.time);
            (spec.clone(), events)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The row answers like a batch evaluation at every time it claims
        /// to answer at, and the claim is not vacuous.
        #[test]
        fn a_live_row_equals_the_batch_evaluation_until_it_expires(
            (spec, events) in arb_spec().prop_flat_map(arb_events),
            as_of_dt in 0i64..45 * DAY_SECS,
            steps in prop::collection::vec(0i64..10 * DAY_SECS, 1..6),
        ) {
            let as_of = T0 + as_of_dt;
            let Some(row) = LiveRow::evaluate(&spec, &events, as_of) else {
                prop_assert!(events.first().is_none_or(|e| e.time > as_of));
                return Ok(());
            };
            let (mut live, mut batch) = (Vec::new(), Vec::new());
            row.at(&spec, as_of, &mut live);
            prop_assert!(spec.evaluate(&events, as_of, &mut batch));
            prop_assert_eq!(live.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            batch.iter().map(|v| quantize(*v).to_bits()).collect::<Vec<_>>());
            prop_assert!(row.valid_until() > as_of);
            for step in steps {
                let t = as_of.saturating_add(step).min(row.valid_until() - 1);
                prop_assert!(row.answers_at(t));
                row.at(&spec, t, &mut live);
                prop_assert!(spec.evaluate(&events, t, &mut batch));
                prop_assert_eq!(live.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                batch.iter().map(|v| quantize(*v).to_bits()).collect::<Vec<_>>(),
                                "at {} (as_of {}, valid until {})", t, as_of, row.valid_until());
            }
        }
    }

    #[test]
    fn a_row_expires_when_an_event_leaves_a_window() {
        let defs = vec![
            FeatureDef::aggregate("logins_7d", Aggregation::Count, &["login"], Some(7)),
            FeatureDef::aggregate("days_since_last", Aggregation::DaysSinceLast, &[], None),
        ];
        let spec = FeatureSpec::new(defs, "t").unwrap();
        let login = UserEvent {
            time: T0,
            type_idx: spec.type_index("login"),
            session: 0,
            amount: None,
        };
        let row = LiveRow::evaluate(&spec, &[login], T0 + DAY_SECS).unwrap();
        assert_eq!(row.valid_until(), T0 + 7 * DAY_SECS);
        let mut out = Vec::new();
        row.at(&spec, T0 + 3 * DAY_SECS, &mut out);
        assert_eq!(out, vec![1.0, 3.0]);
        assert!(!row.answers_at(T0 + 7 * DAY_SECS));
        // A stored event dated later ends the row at its time.
        let later = UserEvent {
            time: T0 + 2 * DAY_SECS,
            ..login
        };
        let row = LiveRow::evaluate(&spec, &[login, later], T0 + DAY_SECS).unwrap();
        assert_eq!(row.valid_until(), T0 + 2 * DAY_SECS);
    }
}
