//! Point-in-time training sets: every cutoff (and the drift reference's
//! snapshot) from one read of the events.

use super::SqliteStore;
use super::features::Evaluated;
use crate::application::ports::{StoreError, TrainingRead};
use crate::domain::features::FeatureSpec;
use crate::domain::label::LabelPolicy;
use crate::domain::model::Dataset;
use crate::domain::sampling::RowSample;
use crate::domain::snapshot::FeatureSnapshot;

impl SqliteStore {
    /// One scan for every cutoff: each user's history is read once and
    /// labelled and evaluated at each `(cutoff, sample)` (and at
    /// `snapshot_at`, as a snapshot); the datasets come back in the order
    /// of `cuts`.
    pub(super) fn training_sets_blocking(
        &self,
        spec: &FeatureSpec,
        policy: &LabelPolicy,
        cuts: &[(i64, RowSample)],
        snapshot_at: Option<i64>,
    ) -> Result<TrainingRead, StoreError> {
        let names = spec.names();
        let horizon = policy.horizon_secs();
        let Some(until) = cuts
            .iter()
            .map(|(c, _)| *c + horizon)
            .chain(snapshot_at)
            .max()
        else {
            return Ok(TrainingRead::default());
        };
        let mut snapshot = snapshot_at.map(|t| {
            FeatureSnapshot::new(
                t,
                chrono::Utc::now().timestamp(),
                names.clone(),
                spec.fingerprint(),
            )
        });
        // The label's event types must be in the evaluator's type table
        // (added at the end: the features' own type indexes, and so their
        // values, are unchanged).
        let spec = &spec
            .clone()
            .with_types(&policy.event_types())
            .map_err(StoreError::Insufficient)?;
        let rule = policy.compile(spec);
        let parts = self.map_users(spec, until, |chunk| {
            let mut sets: Vec<Dataset> = cuts
                .iter()
                .map(|_| Dataset::with_columns(names.clone()))
                .collect();
            let mut at = Evaluated::default();
            let mut out = Vec::with_capacity(spec.len());
            for (user, events) in chunk.iter() {
                for ((cutoff, sample), data) in cuts.iter().zip(&mut sets) {
                    // What a scan up to this cutoff's horizon would read.
                    let seen = &events[..events.partition_point(|e| e.time <= cutoff + horizon)];
                    if sample.keeps(user)
                        && let Some(churned) = rule.label(seen, *cutoff)
                        && spec.evaluate(seen, *cutoff, &mut out)
                    {
                        // The evaluator always yields one value per feature.
                        data.push(user, &out, churned);
                    }
                }
                if let Some(t) = snapshot_at
                    && spec.evaluate(events, t, &mut out)
                {
                    at.users.push(user);
                    at.values.extend(out.iter().map(|v| *v as f32));
                }
            }
            (sets, at)
        })?;
        let mut sets: Vec<Dataset> = cuts
            .iter()
            .map(|_| Dataset::with_columns(names.clone()))
            .collect();
        if let Some(s) = &mut snapshot {
            s.reserve(parts.iter().map(|(_, at)| at.users.len()).sum());
        }
        let n = names.len().max(1);
        for (part, at) in parts {
            for (set, p) in sets.iter_mut().zip(part) {
                set.extend(p);
            }
            if let Some(s) = &mut snapshot {
                for (user, row) in at.users.iter().zip(at.values.chunks_exact(n)) {
                    s.insert_stored(*user, row)?;
                }
            }
        }
        Ok(TrainingRead {
            sets,
            snapshot: snapshot.map(Ok),
        })
    }
}
