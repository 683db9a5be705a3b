//! Step 2: the point-in-time training rows and the two validation halves,
//! sampled in the store under `training.max_training_rows`, with the drift
//! reference's snapshot read in the same pass.

use std::sync::Arc;

use super::outcome::Sampling;
use super::plan::Plan;
use super::{MIN_ELIGIBLE_SHARE, TrainError, TrainModel};
use crate::domain::model::Dataset;
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::FeatureSnapshot;
use crate::domain::time::format_rfc3339;

/// Point-in-time training rows and the two validation halves of one run.
pub(super) struct Sets {
    pub(super) plan: Plan,
    pub(super) sampling: Sampling,
    pub(super) train: Arc<Dataset>,
    /// Rows of `train` per training cutoff, in `plan.train_cutoffs` order
    /// (the rows are stacked in that order).
    pub(super) rows_per_cutoff: Vec<usize>,
    pub(super) validation: Arc<Dataset>,
    pub(super) select: Arc<Dataset>,
    pub(super) report: Arc<Dataset>,
    pub(super) eligible_share: f64,
    pub(super) warnings: Vec<String>,
    /// Every user's features as serving's rebuilds compute them, read in
    /// the same pass as the sets: what drift is measured against.
    pub(super) reference: Result<FeatureSnapshot, String>,
}

impl TrainModel {
    /// The stacked training set and the two validation halves, all point
    /// in time.
    /// With `reference`, the drift reference's snapshot is read in the
    /// same pass.
    pub(super) async fn build_sets(&self, reference: bool) -> Result<Sets, TrainError> {
        // Read once: counting users can cost a pass over the events.
        let stats = self.events.stats().await?;
        let plan = self.plan(&stats)?;
        let policy = &self.options.policy;
        let max_rows = self.options.max_training_rows;
        let users = stats.users.max(1);
        let reference_at = match (reference, stats.last_event_time) {
            (false, _) => Err("not asked for".to_string()),
            (true, None) => Err("no events".to_string()),
            (true, Some(last)) => self
                .options
                .reference_as_of
                .at(chrono::Utc::now().timestamp(), Some(last))
                .ok_or_else(|| "no events".to_string()),
        };
        let snapshot_at = reference_at.as_ref().ok().copied();
        // No more users than the store holds can be eligible, so a share of
        // `max_rows / users` bounds the validation rows.
        let validation_sample = RowSample::capped(max_rows, users as f64, plan.validation_cutoff);
        let n_train = plan.train_cutoffs.len() as f64;
        let (validation, train, rows_per_cutoff, train_share, snapshot) =
            if max_rows == 0 || users as f64 * n_train <= max_rows as f64 {
                // The cap cannot bind (no cutoff has more eligible users than
                // the store has users): every cutoff in one pass over the
                // events.
                let mut cuts = vec![(plan.validation_cutoff, validation_sample)];
                cuts.extend(plan.train_cutoffs.iter().map(|&c| (c, RowSample::ALL)));
                let read = self
                    .features
                    .training_sets(&self.spec, policy, &cuts, snapshot_at)
                    .await?;
                let mut sets = read.sets.into_iter();
                let validation = sets.next().unwrap_or_default();
                let (train, rows_per_cutoff) = stack(sets);
                (validation, train, rows_per_cutoff, 1.0, read.snapshot)
            } else {
                // Validation first: the rows it keeps estimate how many users
                // are eligible per cutoff, which sizes the training share; the
                // training cutoffs then share one pass.
                let validation = self
                    .features
                    .training_set(
                        &self.spec,
                        policy,
                        plan.validation_cutoff,
                        validation_sample,
                    )
                    .await?;
                let eligible = validation.len() as f64 / validation_sample.share();
                let train_share = RowSample::capped(max_rows, eligible * n_train, 0).share();
                let cuts: Vec<(i64, RowSample)> = plan
                    .train_cutoffs
                    .iter()
                    .map(|&c| (c, RowSample::share_at(train_share, c)))
                    .collect();
                let read = self
                    .features
                    .training_sets(&self.spec, policy, &cuts, snapshot_at)
                    .await?;
                let (train, rows_per_cutoff) = stack(read.sets);
                (
                    validation,
                    train,
                    rows_per_cutoff,
                    train_share,
                    read.snapshot,
                )
            };
        let eligible = validation.len() as f64 / validation_sample.share();
        let eligible_share = eligible / users as f64;
        let sampling = Sampling {
            max_rows,
            train_share,
            validation_share: validation_sample.share(),
        };
        if sampling.applied() {
            tracing::info!(
                max_rows,
                train_share,
                validation_share = sampling.validation_share,
                train_rows = train.len(),
                validation_rows = validation.len(),
                "training rows sampled (training.max_training_rows)"
            );
        }
        let mut warnings = plan.warnings.clone();
        if eligible_share < MIN_ELIGIBLE_SHARE {
            warnings.push(format!(
                "only {:.1}% of the {users} users are eligible at {} (at least {} activity \
                 events in the {} days before it): the figures describe those users only; if \
                 users you count as customers return less often, raise training.lookback_days \
                 (`churn profile` shows the share per lookback and recommends one)",
                100.0 * eligible_share,
                format_rfc3339(plan.validation_cutoff),
                policy.min_events,
                policy.lookback_days
            ));
        }
        check_set("training", &train)?;
        check_set("validation", &validation)?;
        let (select, report) = validation.split_by_user();
        let (select, report) = if usable(&select) && usable(&report) {
            (select, report)
        } else {
            warnings.push(format!(
                "the validation set ({} users) is too small to hold half out: \
                 the reported figures are the ones the choice was made on (optimistic); \
                 more users or a longer training.horizon_days help",
                validation.len()
            ));
            (validation.clone(), validation.clone())
        };
        Ok(Sets {
            plan,
            sampling,
            train: Arc::new(train),
            rows_per_cutoff,
            validation: Arc::new(validation),
            select: Arc::new(select),
            report: Arc::new(report),
            eligible_share,
            warnings,
            reference: reference_at.and_then(|_| match snapshot {
                Some(Ok(s)) => Ok(s),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the store returned no snapshot".to_string()),
            }),
        })
    }
}

fn check_set(which: &str, d: &Dataset) -> Result<(), TrainError> {
    let positives = d.labels.iter().filter(|l| **l).count();
    if d.len() < 20 || positives == 0 || positives == d.len() {
        return Err(TrainError::Insufficient(format!(
            "the {which} set has {} eligible users of which {positives} churned; \
             need at least 20 with both outcomes",
            d.len()
        )));
    }
    Ok(())
}

/// Whether a validation half can be evaluated (both outcomes present).
fn usable(d: &Dataset) -> bool {
    let positives = d.labels.iter().filter(|l| **l).count();
    d.len() >= 10 && positives > 0 && positives < d.len()
}

/// The per-cutoff sets stacked in order, and how many rows each gave.
fn stack(sets: impl IntoIterator<Item = Dataset>) -> (Dataset, Vec<usize>) {
    let mut train = Dataset::default();
    let mut rows = Vec::new();
    for set in sets {
        rows.push(set.len());
        train.extend(set);
    }
    (train, rows)
}
