//! Step 1: the validation cutoff and the training cutoffs of a run.

use super::{TrainError, TrainModel};
use crate::application::ports::EventStats;
use crate::domain::time::{DAY_SECS, floor_day, format_rfc3339};

/// The cutoffs of one run and why there are fewer than configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub train_cutoffs: Vec<i64>,
    pub validation_cutoff: i64,
    pub warnings: Vec<String>,
}

impl TrainModel {
    /// Chooses the validation cutoff and the training cutoffs.
    ///
    /// # Errors
    /// [`TrainError::Insufficient`] when the data does not span enough time.
    pub async fn plan_cutoffs(&self) -> Result<Plan, TrainError> {
        self.plan(&self.events.stats().await?)
    }

    pub(super) fn plan(&self, stats: &EventStats) -> Result<Plan, TrainError> {
        let (Some(first), Some(last)) = (stats.first_event_time, stats.last_event_time) else {
            return Err(TrainError::Insufficient(
                "the event store is empty; ingest events first".into(),
            ));
        };
        let policy = &self.options.policy;
        let h = policy.horizon_secs();
        let validation = self
            .options
            .validation_cutoff
            .unwrap_or_else(|| floor_day(last) - h);
        if validation + h > last {
            return Err(TrainError::Insufficient(format!(
                "the validation horizon ({} + {} days) runs past the last event ({}): \
                 set training.validation_cutoff earlier or shorten training.horizon_days",
                format_rfc3339(validation),
                policy.horizon_days,
                format_rfc3339(last)
            )));
        }
        let step = i64::from(self.options.snapshot_step_days.max(1)) * DAY_SECS;
        let earliest_useful = first + policy.lookback_secs().min(h);
        let wanted = self.options.train_snapshots.max(1);
        let mut train: Vec<i64> = (0..wanted)
            .map(|k| validation - h - i64::from(k) * step)
            .filter(|t| *t > earliest_useful)
            .collect();
        train.reverse();
        if train.is_empty() {
            return Err(TrainError::Insufficient(format!(
                "events span {} to {}: training needs history before {} plus two horizons of {} days \
                 (shorten training.horizon_days or training.lookback_days)",
                format_rfc3339(first),
                format_rfc3339(last),
                format_rfc3339(validation - h),
                policy.horizon_days
            )));
        }
        let mut warnings = Vec::new();
        if train.len() < wanted as usize {
            warnings.push(format!(
                "the history ({} to {}) holds {} of the {wanted} training cutoffs \
                 (training.train_snapshots, {} days apart): training on fewer",
                format_rfc3339(first),
                format_rfc3339(last),
                train.len(),
                self.options.snapshot_step_days
            ));
        }
        Ok(Plan {
            train_cutoffs: train,
            validation_cutoff: validation,
            warnings,
        })
    }
}
