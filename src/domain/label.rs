//! The churn label: who is eligible at a cutoff T and who churned after it,
//! per the team's definition (`[training]` in the config).
//!
//! - **Activity** events are those of `activity_event_types`, or, when that
//!   list is empty, every event that is not a churn event.
//! - **Eligible** at T: at least `min_events` activity events in the
//!   lookback `(T - lookback, T]` — users already gone before T are not
//!   "churning", they are gone — and, with churn events declared, not
//!   already churned: a user whose last churn event at or before T is newer
//!   than their last activity is not eligible.
//! - **Churned**, inactivity mode (`churn_event_types` empty): no activity
//!   event in the horizon `(T, T + H]`.
//! - **Churned**, explicit mode: a churn event in `(T, T + H]` with no
//!   activity after it up to T + H (a user who cancels and comes back within
//!   the horizon is retained; one who goes quiet without cancelling is not
//!   churned).
//!
//! An event exactly at T is history (a feature input), never a label input.
//! Every store evaluates the rule through the same windows: the embedded one
//! with [`LabelRule::label`], ClickHouse in SQL rendered from this policy.

use serde::{Deserialize, Serialize};

use super::features::{FeatureSpec, UserEvent};
use super::time::DAY_SECS;

/// A half-open time window `(after, until]`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: i64,
    pub until: i64,
}

impl Window {
    fn contains(&self, t: i64) -> bool {
        t > self.after && t <= self.until
    }
}

/// The team's churn definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelPolicy {
    pub horizon_days: u32,
    pub lookback_days: u32,
    /// Event types that count as activity; empty = all but churn types.
    #[serde(default)]
    pub activity_event_types: Vec<String>,
    /// Explicit churn events (`cancel`, ...); empty = churn is inactivity.
    #[serde(default)]
    pub churn_event_types: Vec<String>,
    /// Activity events in the lookback needed to be eligible (at least 1).
    #[serde(default = "one")]
    pub min_events: u32,
}

fn one() -> u32 {
    1
}

impl LabelPolicy {
    /// Inactivity churn over every event type, eligible with one event.
    pub fn inactivity(horizon_days: u32, lookback_days: u32) -> Self {
        Self {
            horizon_days,
            lookback_days,
            activity_event_types: Vec::new(),
            churn_event_types: Vec::new(),
            min_events: 1,
        }
    }

    pub fn horizon_secs(&self) -> i64 {
        i64::from(self.horizon_days) * DAY_SECS
    }

    pub fn lookback_secs(&self) -> i64 {
        i64::from(self.lookback_days) * DAY_SECS
    }

    /// Whether churn is declared by events (not inactivity).
    pub fn explicit(&self) -> bool {
        !self.churn_event_types.is_empty()
    }

    /// Every event type the rule names (the evaluator must know them).
    pub fn event_types(&self) -> Vec<String> {
        let mut t = self.activity_event_types.clone();
        t.extend(self.churn_event_types.iter().cloned());
        t
    }

    /// The eligibility window `(T - lookback, T]`.
    pub fn eligibility_window(&self, cutoff: i64) -> Window {
        Window {
            after: cutoff - self.lookback_secs(),
            until: cutoff,
        }
    }

    /// The horizon `(T, T + H]`.
    pub fn horizon_window(&self, cutoff: i64) -> Window {
        Window {
            after: cutoff,
            until: cutoff + self.horizon_secs(),
        }
    }

    /// The rule against a spec's type table (which must hold the rule's
    /// types: build it with `spec.with_types(&policy.event_types())`).
    pub fn compile(&self, spec: &FeatureSpec) -> LabelRule {
        let idx = |types: &[String]| -> Vec<u16> {
            types
                .iter()
                .map(|t| spec.type_index(&super::event::canonical_type(t)))
                .collect()
        };
        LabelRule {
            policy: self.clone(),
            activity: idx(&self.activity_event_types),
            churn: idx(&self.churn_event_types),
        }
    }
}

/// A [`LabelPolicy`] with its types resolved to the evaluator's indexes.
#[derive(Debug, Clone)]
pub struct LabelRule {
    policy: LabelPolicy,
    activity: Vec<u16>,
    churn: Vec<u16>,
}

impl LabelRule {
    fn is_churn(&self, e: &UserEvent) -> bool {
        self.churn.contains(&e.type_idx)
    }

    fn is_activity(&self, e: &UserEvent) -> bool {
        if self.activity.is_empty() {
            !self.is_churn(e)
        } else {
            self.activity.contains(&e.type_idx)
        }
    }

    /// The label of one user at `cutoff` from their time-sorted events:
    /// `None` if not eligible, `Some(true)` if churned.
    pub fn label(&self, events: &[UserEvent], cutoff: i64) -> Option<bool> {
        let p = &self.policy;
        let lookback = p.eligibility_window(cutoff);
        let in_lookback = events
            .iter()
            .filter(|e| lookback.contains(e.time) && self.is_activity(e))
            .count();
        if in_lookback < p.min_events.max(1) as usize {
            return None;
        }
        let horizon = p.horizon_window(cutoff);
        if !p.explicit() {
            let active = events
                .iter()
                .any(|e| horizon.contains(e.time) && self.is_activity(e));
            return Some(!active);
        }
        let last_before = |pick: &dyn Fn(&UserEvent) -> bool| {
            events
                .iter()
                .filter(|e| e.time <= cutoff && pick(e))
                .map(|e| e.time)
                .max()
        };
        let churn_before = last_before(&|e| self.is_churn(e));
        let act_before = last_before(&|e| self.is_activity(e));
        if churn_before.is_some() && churn_before > act_before {
            return None; // already churned before T
        }
        let last_churn = events
            .iter()
            .filter(|e| horizon.contains(e.time) && self.is_churn(e))
            .map(|e| e.time)
            .max();
        Some(last_churn.is_some_and(|c| {
            !events
                .iter()
                .any(|e| e.time > c && e.time <= horizon.until && self.is_activity(e))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600;
    const D: i64 = DAY_SECS;

    fn spec() -> FeatureSpec {
        FeatureSpec::standard()
            .with_types(&["cancel".into(), "renew".into()])
            .unwrap()
    }

    fn at(spec: &FeatureSpec, time: i64, kind: &str) -> UserEvent {
        UserEvent {
            time,
            type_idx: spec.type_index(kind),
            session: 0,
            amount: None,
        }
    }

    #[test]
    fn inactivity_edges_of_the_windows() {
        let s = spec();
        let p = LabelPolicy::inactivity(30, 30);
        let r = p.compile(&s);
        let (h, l) = (p.horizon_secs(), p.lookback_secs());
        let at = |t| at(&s, t, "login");
        // Event exactly at T is history; nothing after: churned.
        assert_eq!(r.label(&[at(T)], T), Some(true));
        // Event at T + H is inside the horizon: retained.
        assert_eq!(r.label(&[at(T), at(T + h)], T), Some(false));
        // Event one second after the horizon: churned.
        assert_eq!(r.label(&[at(T), at(T + h + 1)], T), Some(true));
        // Last event exactly at T - lookback is outside the lookback: ineligible.
        assert_eq!(r.label(&[at(T - l), at(T + 5)], T), None);
        assert_eq!(r.label(&[at(T - l + 1), at(T + 5)], T), Some(false));
        // Only future events: ineligible (did not exist yet at T).
        assert_eq!(r.label(&[at(T + 5)], T), None);
        assert_eq!(r.label(&[], T), None);
    }

    #[test]
    fn activity_types_and_minimum_events() {
        let s = spec();
        let p = LabelPolicy {
            activity_event_types: vec!["purchase".into()],
            min_events: 2,
            ..LabelPolicy::inactivity(30, 30)
        };
        let r = p.compile(&s);
        let buy = |t| at(&s, t, "purchase");
        let view = |t| at(&s, t, "view");
        // One purchase in the lookback: not eligible with min_events = 2.
        assert_eq!(r.label(&[buy(T - D), buy(T + D)], T), None);
        // Two purchases, then only views: views are not activity -> churned.
        assert_eq!(
            r.label(&[buy(T - 2 * D), buy(T - D), view(T + D)], T),
            Some(true)
        );
        assert_eq!(
            r.label(&[buy(T - 2 * D), buy(T - D), buy(T + D)], T),
            Some(false)
        );
    }

    #[test]
    fn explicit_churn_edge_cases() {
        let s = spec();
        let p = LabelPolicy {
            churn_event_types: vec!["cancel".into()],
            ..LabelPolicy::inactivity(30, 30)
        };
        let r = p.compile(&s);
        let h = p.horizon_secs();
        let login = |t| at(&s, t, "login");
        let cancel = |t| at(&s, t, "cancel");
        // Cancels inside the horizon and stays away: churned.
        assert_eq!(r.label(&[login(T - D), cancel(T + D)], T), Some(true));
        // Cancels exactly at T + H: still inside the horizon.
        assert_eq!(r.label(&[login(T - D), cancel(T + h)], T), Some(true));
        // Cancels one second after the horizon: not churned within it.
        assert_eq!(r.label(&[login(T - D), cancel(T + h + 1)], T), Some(false));
        // Cancels, then comes back before T + H: retained.
        assert_eq!(
            r.label(&[login(T - D), cancel(T + D), login(T + 2 * D)], T),
            Some(false)
        );
        // Activity at the very second of the cancel is not "after" it.
        assert_eq!(
            r.label(&[login(T - D), cancel(T + D), login(T + D)], T),
            Some(true)
        );
        // Goes quiet without cancelling: not churned in explicit mode.
        assert_eq!(r.label(&[login(T - D)], T), Some(false));
        // Cancelled before T, after their last activity: already gone.
        assert_eq!(r.label(&[login(T - 2 * D), cancel(T - D)], T), None);
        // Cancelled before T but active again since: eligible.
        assert_eq!(
            r.label(&[cancel(T - 3 * D), login(T - D), cancel(T + D)], T),
            Some(true)
        );
        // A churn event alone in the lookback is not activity.
        assert_eq!(r.label(&[cancel(T - D)], T), None);
    }
}
