//! The churn label: who is eligible at a cutoff T and who churned after it.
//!
//! - Eligible: at least one event in the lookback window `(T - lookback, T]`
//!   (users already gone before T are not "churning", they are gone).
//! - Churned: no event at all in the horizon `(T, T + H]`.
//!
//! An event exactly at T is history (a feature input), never a label input.

use serde::{Deserialize, Serialize};

use super::features::UserEvent;
use super::time::DAY_SECS;

/// A half-open time window `(after, until]`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: i64,
    pub until: i64,
}

/// Horizon and eligibility window of the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelPolicy {
    pub horizon_days: u32,
    pub lookback_days: u32,
}

impl LabelPolicy {
    pub fn horizon_secs(&self) -> i64 {
        i64::from(self.horizon_days) * DAY_SECS
    }

    pub fn lookback_secs(&self) -> i64 {
        i64::from(self.lookback_days) * DAY_SECS
    }

    /// The eligibility window `(start, end]` at `cutoff`: a user with an
    /// event in it is eligible. Every store evaluates the rule through these
    /// bounds (the embedded one in [`LabelPolicy::label`], ClickHouse in SQL).
    pub fn eligibility_window(&self, cutoff: i64) -> Window {
        Window {
            after: cutoff - self.lookback_secs(),
            until: cutoff,
        }
    }

    /// The horizon `(start, end]` at `cutoff`: an eligible user with no
    /// event in it churned.
    pub fn horizon_window(&self, cutoff: i64) -> Window {
        Window {
            after: cutoff,
            until: cutoff + self.horizon_secs(),
        }
    }

    /// The label of one user at `cutoff` from their time-sorted events:
    /// `None` if not eligible, `Some(true)` if churned.
    pub fn label(&self, events: &[UserEvent], cutoff: i64) -> Option<bool> {
        let in_window = |w: Window| {
            let start = events.partition_point(|e| e.time <= w.after);
            events.get(start).is_some_and(|e| e.time <= w.until)
        };
        if !in_window(self.eligibility_window(cutoff)) {
            return None;
        }
        Some(!in_window(self.horizon_window(cutoff)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600;

    fn at(time: i64) -> UserEvent {
        UserEvent {
            time,
            type_idx: 0,
            session: 0,
            amount: 0.0,
        }
    }

    fn policy() -> LabelPolicy {
        LabelPolicy {
            horizon_days: 30,
            lookback_days: 30,
        }
    }

    #[test]
    fn edges_of_the_windows() {
        let p = policy();
        let h = p.horizon_secs();
        let l = p.lookback_secs();
        // Event exactly at T is history; nothing after: churned.
        assert_eq!(p.label(&[at(T)], T), Some(true));
        // Event at T + H is inside the horizon: retained.
        assert_eq!(p.label(&[at(T), at(T + h)], T), Some(false));
        // Event one second after the horizon: churned.
        assert_eq!(p.label(&[at(T), at(T + h + 1)], T), Some(true));
        // Last event exactly at T - lookback is outside the lookback: ineligible.
        assert_eq!(p.label(&[at(T - l), at(T + 5)], T), None);
        assert_eq!(p.label(&[at(T - l + 1), at(T + 5)], T), Some(false));
        // Only future events: ineligible (did not exist yet at T).
        assert_eq!(p.label(&[at(T + 5)], T), None);
        assert_eq!(p.label(&[], T), None);
    }
}
